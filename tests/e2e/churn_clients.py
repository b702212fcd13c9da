"""The client side of the churn harness: tests/node/churn.mjs and what its clients report.

One Node process holds the whole fleet (official ``@microsoft/signalr`` clients, see the
header of churn.mjs for its commands and events); ``ChurnClients`` sends it commands and files
every event under its client's ``ClientRecord`` (tests/e2e/churn_counting.py).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

from tests.conftest import NODE_DIR
from tests.e2e.churn_counting import ClientRecord, ClientSpec

CHURN_DRIVER = NODE_DIR / "churn.mjs"
#: The reconnect delays (ms) of every client: quick at first, then steady.
RECONNECT_DELAYS = [0, 200, 500, 1000, 1000, 2000, 2000, 2000, 2000, 2000, 2000, 2000]


class DriverError(AssertionError):
    """The Node driver failed a command or went away."""


class ChurnClients:
    """The Node process of tests/node/churn.mjs and what its clients reported."""

    def __init__(self, timeout: float = 120.0, node: str = "node") -> None:
        self.proc = subprocess.Popen(
            [node, str(CHURN_DRIVER), "--timeout", str(int(timeout * 1000))],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._stderr: list[str] = []
        self._eof = False
        self.records: dict[str, ClientRecord] = {}
        self.other_events: list[dict[str, Any]] = []
        self._t_out = threading.Thread(target=self._read_stdout, daemon=True)
        self._t_err = threading.Thread(target=self._read_stderr, daemon=True)
        self._t_out.start()
        self._t_err.start()

    # -- plumbing -----------------------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self._take(obj)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _take(self, obj: dict[str, Any]) -> None:
        if "id" in obj:
            self._replies[int(obj["id"])] = obj
            return
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

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def stderr_tail(self, lines: int = 30) -> str:
        return "".join(self._stderr[-lines:])

    def request(self, op: str, timeout: float = 10.0, **fields: Any) -> Any:
        """Send one command, wait (bounded) for its reply, return its value."""
        with self._write_lock:
            self._next_id += 1
            rid = self._next_id
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps({"id": rid, "op": op, **fields}) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise DriverError(f"the churn driver is gone: {exc}\n{self.stderr_tail()}") from exc
        with self._cond:
            done = self._cond.wait_for(lambda: rid in self._replies or self._eof, timeout)
            raw = self._replies.pop(rid, None)
        if raw is None:
            why = "exited" if done else f"did not answer within {timeout}s"
            raise DriverError(f"churn driver {why} ({op})\n{self.stderr_tail()}")
        if "error" in raw:
            raise DriverError(f"{op} failed: {raw['error']}\n{self.stderr_tail()}")
        return raw.get("ok")

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (re-checked whenever the driver reports)."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

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

    def close(self) -> None:
        """Stop every client and the process (bounded)."""
        if self.proc.poll() is None:
            try:
                self.request("exit", timeout=3)
            except DriverError:
                pass
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._t_out.join(timeout=5)
        self._t_err.join(timeout=5)
