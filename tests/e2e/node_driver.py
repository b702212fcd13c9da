"""A Node process that holds official SignalR clients and takes commands over stdin.

What tests/node/cluster.mjs (``Puppets``) and tests/node/churn.mjs (``ChurnClients``) share:
one JSON object per line each way; a command ``{"id", "op", ...}`` gets exactly one reply with
its id, and every other line is an event the subclass files (``_event``, called under the
lock). Every wait is bounded, and a driver that exits fails whoever waits for it.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import NODE_DIR


class NodeDriver:
    """The process, its reader threads, and commands matched to their replies."""

    #: What a failed or vanished driver raises (subclasses name their own).
    error: type[AssertionError] = AssertionError
    #: How error messages name the driver.
    label = "the Node driver"

    def __init__(self, script: Path, node: str, timeout: float) -> None:
        # Subclasses set up what ``_event`` files into before calling this: events start
        # arriving as soon as the reader threads run.
        self.proc = subprocess.Popen(
            [node, str(script), "--timeout", str(int(timeout * 1000))],
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
        self._t_out = threading.Thread(target=self._read_stdout, daemon=True)
        self._t_err = threading.Thread(target=self._read_stderr, daemon=True)
        self._t_out.start()
        self._t_err.start()

    # -- what subclasses choose --------------------------------------------------------------
    def _decode(self, line: str) -> Any:
        """One line of the driver's output as a Python value."""
        return json.loads(line)

    def _event(self, obj: dict[str, Any]) -> None:
        """File an event (anything that is not a reply); called with the lock held."""

    # -- plumbing ----------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = self._decode(line)
            except ValueError:
                continue
            with self._cond:
                if "id" in obj:
                    self._replies[int(obj["id"])] = obj
                else:
                    self._event(obj)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def stderr_tail(self, lines: int = 30) -> str:
        return "".join(self._stderr[-lines:])

    def send(self, op: str, **fields: Any) -> int:
        """Send one command without waiting; returns its id (see :meth:`reply`)."""
        with self._write_lock:
            self._next_id += 1
            rid = self._next_id
            line = json.dumps({"id": rid, "op": op, **fields}) + "\n"
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise self.error(f"{self.label} is gone: {exc}\n{self.stderr_tail()}") from exc
        return rid

    def reply(self, rid: int, what: str, timeout: float) -> dict[str, Any]:
        """The raw reply to command ``rid`` (waited for up to ``timeout`` seconds)."""
        with self._cond:
            done = self._cond.wait_for(lambda: rid in self._replies or self._eof, timeout)
            raw = self._replies.pop(rid, None)
        if raw is None:
            why = "exited" if done else f"did not answer within {timeout}s"
            raise self.error(f"{self.label} {why} ({what})\n{self.stderr_tail()}")
        return raw

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (re-checked whenever the driver reports)."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def close(self) -> None:
        """Stop every client and the process (bounded)."""
        if self.proc.poll() is None:
            try:
                self.reply(self.send("exit"), "exit", 3)
            except self.error:
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
