"""The client side of the churn harness: tests/node/churn.mjs and what its clients report.

One Node process holds the whole fleet (official ``@microsoft/signalr`` clients, see the
header of churn.mjs for its commands and events); ``ChurnClients`` sends it commands and files
every event under its client's ``ClientRecord`` (tests/e2e/churn_counting.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.conftest import NODE_DIR
from tests.e2e.churn_counting import ClientRecord, ClientSpec
from tests.e2e.node_driver import NodeDriver

CHURN_DRIVER = NODE_DIR / "churn.mjs"
#: The reconnect delays (ms) of every client: quick at first, then steady.
RECONNECT_DELAYS = [0, 200, 500, 1000, 1000, 2000, 2000, 2000, 2000, 2000, 2000, 2000]


class DriverError(AssertionError):
    """The Node driver failed a command or went away."""


class ChurnClients(NodeDriver):
    """The Node process of tests/node/churn.mjs and what its clients reported."""

    error = DriverError
    label = "the churn driver"

    def __init__(self, timeout: float = 120.0, node: str = "node") -> None:
        self.records: dict[str, ClientRecord] = {}
        self.other_events: list[dict[str, Any]] = []
        super().__init__(CHURN_DRIVER, node, timeout)

    def _event(self, obj: dict[str, Any]) -> None:
        record = self.records.get(str(obj.get("conn")))
        if record is None:
            self.other_events.append(obj)
            return
        event = obj.get("event")
        if event == "ticks":
            record.seqs.extend(int(s) for s in obj["seqs"])
            record.arrivals.extend(ms / 1000 for ms in obj["at"])
        elif event == "nticks":
            record.node_seqs.extend(int(s) for s in obj["seqs"])
            record.node_arrivals.extend(ms / 1000 for ms in obj["at"])
        elif event == "echo-failed":
            record.echo_failures.append((int(obj["n"]), str(obj["error"])))
        else:
            record.events.append(obj)
            cid = obj.get("connectionId")
            if cid and (not record.ids or record.ids[-1] != cid):
                record.ids.append(str(cid))
            if event in ("joined", "where"):
                record.nodes.append((obj["t"] / 1000, int(obj["pid"]), str(obj.get("why", event))))

    def request(self, op: str, timeout: float = 10.0, **fields: Any) -> Any:
        """Send one command, wait (bounded) for its reply, return its value."""
        raw = self.reply(self.send(op, **fields), op, timeout)
        if "error" in raw:
            raise DriverError(f"{op} failed: {raw['error']}\n{self.stderr_tail()}")
        return raw.get("ok")

    def snapshot(self) -> dict[str, ClientRecord]:
        """The records as they are now (copied under the lock)."""
        with self._cond:
            return {
                name: ClientRecord(
                    r.spec,
                    list(r.seqs),
                    list(r.arrivals),
                    list(r.ids),
                    list(r.nodes),
                    list(r.events),
                    list(r.echo_failures),
                    dict(r.final),
                    list(r.node_seqs),
                    list(r.node_arrivals),
                )
                for name, r in self.records.items()
            }

    # -- the fleet ----------------------------------------------------------------------
    def start(
        self,
        url: str,
        group: str,
        specs: Sequence[ClientSpec],
        *,
        echo_interval: float = 0.1,
        echo_timeout: float = 10.0,
        max_echoes: int = 100_000,
        timeout: float = 30.0,
    ) -> dict[str, str]:
        """Connect every client (each joins ``group``); returns name -> connection id."""
        with self._cond:
            for spec in specs:
                self.records[spec.name] = ClientRecord(spec)
        ids: dict[str, str] = self.request(
            "start",
            timeout,
            url=url,
            group=group,
            clients=[s.wire() for s in specs],
            reconnect=RECONNECT_DELAYS,
            echoIntervalMs=int(echo_interval * 1000),
            echoTimeoutMs=int(echo_timeout * 1000),
            maxEchoes=max_echoes,
        )
        return ids

    def finish(self, timeout: float = 20.0) -> None:
        """Stop the echo loops and take each client's final state and Echo counts."""
        finals: dict[str, dict[str, Any]] = self.request("finish", timeout)
        with self._cond:
            for name, final in finals.items():
                self.records[name].final = final
