"""The two publishers of the churn harness (tests/e2e/churn.py), each numbering its messages.

- ``TickPublisher``: ``backplane.Emitter`` in a thread of the test process, ``Tick(seq)`` to the
  group; a seq is published once Redis confirmed it, failed when the send raised (never retried
  under its number: a retry would be a new message);
- ``NodeTickPublisher``: a client of one node invoking ``Publish(group, seq)``, so that
  ``NodeTick(seq)`` leaves through that node's outbox; a seq is accepted once the invocation
  completed without error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from backplane import Emitter
from tests.e2e.churn_counting import NodeStream
from tests.e2e.churn_hubs import WIRE_NAME
from tests.e2e.raw import RawClient

__all__ = ["NodeTickPublisher", "TickPublisher"]


class TickPublisher:
    """``Tick(seq)`` to a group through ``backplane.Emitter``, ``rate`` times a second."""

    def __init__(self, redis_url: str, channel_prefix: str, group: str, rate: float = 20.0) -> None:
        self.redis_url = redis_url
        self.channel_prefix = channel_prefix
        self.group = group
        self.period = 1.0 / rate
        self.published: list[tuple[int, float]] = []  # (seq, epoch seconds), confirmed
        self.failed: list[tuple[int, str]] = []
        self.failed_seconds: list[float] = []  # how long each failed send took to fail
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tick-publisher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        emitter = Emitter(self.redis_url, hub=WIRE_NAME, channel_prefix=self.channel_prefix)
        loop = asyncio.get_running_loop()
        proxy = emitter.clients.group(self.group)
        seq = 0
        due = loop.time()
        try:
            while not self._stop.is_set():
                seq += 1
                at = time.time()
                try:
                    await asyncio.wait_for(proxy.send("Tick", seq), 5.0)
                    with self._lock:
                        self.published.append((seq, at))
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    with self._lock:
                        self.failed.append((seq, repr(exc)))
                        self.failed_seconds.append(time.time() - at)
                due += self.period
                await asyncio.sleep(max(0.0, due - loop.time()))
        finally:
            await emitter.aclose()

    @property
    def last(self) -> int:
        """The last sequence number Redis confirmed."""
        with self._lock:
            return self.published[-1][0] if self.published else 0

    @property
    def failed_seqs(self) -> frozenset[int]:
        """The numbers whose send raised ("not published"; Redis may have run some)."""
        with self._lock:
            return frozenset(seq for seq, _ in self.failed)

    def stop(self) -> int:
        """Stop publishing; returns the last confirmed sequence number."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        return self.last


class NodeTickPublisher:
    """``NodeTick(seq)`` to a group from inside one node, ``rate`` times a second.

    A client of that node (a raw WebSocket, JSON, straight to the node) invokes
    ``Publish(group, seq)`` and waits for its completion: the hub method sends to the group
    through the node's lifetime manager, so the message goes to the node's own members at
    once and to the others through the node's outbox, which keeps it through a Redis outage.
    A seq is *accepted* when the completion came without error within ``timeout``; a failed
    one is not retried under its number.
    """

    def __init__(self, ws_url: str, group: str, rate: float = 20.0, timeout: float = 5.0) -> None:
        self.ws_url = ws_url
        self.group = group
        self.period = 1.0 / rate
        self.timeout = timeout
        self.accepted: list[tuple[int, float]] = []  # (seq, epoch seconds)
        self.failed: list[tuple[int, str]] = []
        self.late: list[tuple[str, str | None]] = []  # completions after their timeout
        self.error: str | None = None  # why the loop ended early (the socket closed)
        self._client: RawClient | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        client = RawClient(self.ws_url, "json")
        reply = client.handshake()
        if reply.get("error"):
            client.close()
            raise AssertionError(f"node publisher handshake refused: {reply}")
        self._client = client
        self._thread = threading.Thread(target=self._run, name="node-publisher", daemon=True)
        self._thread.start()

    def _completion(self, client: RawClient, iid: str) -> Any:
        deadline = time.monotonic() + self.timeout
        while True:
            msg = client.next_message(max(0.01, deadline - time.monotonic()))
            kind = client.type_of(msg)
            if kind == 7:
                raise ConnectionError(f"the node closed the publisher's connection: {msg}")
            if kind != 3:
                continue
            if msg.get("invocationId") == iid:
                return msg
            with self._lock:
                self.late.append((str(msg.get("invocationId")), msg.get("error")))

    def _run(self) -> None:
        client = self._client
        assert client is not None
        seq = 0
        due = time.monotonic()
        try:
            while not self._stop.is_set():
                seq += 1
                at = time.time()
                try:
                    client.invoke("Publish", self.group, seq, invocation_id=str(seq))
                    msg = self._completion(client, str(seq))
                    with self._lock:
                        if msg.get("error"):
                            self.failed.append((seq, str(msg["error"])))
                        else:
                            self.accepted.append((seq, at))
                except TimeoutError as exc:
                    with self._lock:
                        self.failed.append((seq, repr(exc)))
                except Exception as exc:  # noqa: BLE001 - the connection is gone: reported
                    with self._lock:
                        self.failed.append((seq, repr(exc)))
                        self.error = repr(exc)
                    return
                due += self.period
                time.sleep(max(0.0, due - time.monotonic()))
        finally:
            client.close()

    @property
    def last(self) -> int:
        """The last sequence number the node accepted."""
        with self._lock:
            return self.accepted[-1][0] if self.accepted else 0

    def stream(self) -> NodeStream:
        """What it published, for the counting."""
        with self._lock:
            return NodeStream(
                frozenset(s for s, _ in self.accepted),
                frozenset(s for s, _ in self.failed),
                self.accepted[-1][0] if self.accepted else 0,
            )

    def stop(self) -> int:
        """Stop publishing; returns the last accepted sequence number."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)
        elif self._client is not None:
            self._client.close()
        return self.last
