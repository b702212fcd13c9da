"""One headless Chromium, driven from the tests through ``tests/node/browser.mjs``.

Debian's ``chromium`` (or ``$HUBPLANE_CHROMIUM``) launched by ``playwright-core`` from npm with
the system executable: no browser download. ``Browser`` starts the driver once (a module fixture
does, so a module launches one browser); ``Browser.open(name, url)`` gives a ``Page`` in a
browser context of its own.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NODE_DIR

DRIVER = NODE_DIR / "browser.mjs"


def chromium_path() -> str | None:
    """The Chromium executable to launch, or None when there is none."""
    given = os.environ.get("HUBPLANE_CHROMIUM")
    if given:
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(AssertionError):
    """A command the driver could not carry out."""


class Browser:
    """A Node process holding one Chromium; commands go one at a time."""

    def __init__(self, timeout: float = 30.0) -> None:
        executable = chromium_path()
        if executable is None:
            pytest.fail("chromium not found: apt-get install chromium (or set HUBPLANE_CHROMIUM)")
        self.timeout = timeout
        env = dict(os.environ, HUBPLANE_CHROMIUM=executable)
        self.proc = subprocess.Popen(
            ["node", str(DRIVER)],
            cwd=NODE_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._next = 0
        self._stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        hello = self._read()
        if not hello.get("ready"):
            raise BrowserError(f"the browser driver did not start: {hello}")
        self.version = str(hello.get("version"))

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._lines.put(line)
        self._lines.put("")  # end of output

    def _read(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            line = ""
        if not line:
            raise BrowserError("no answer from the browser driver\n" + "".join(self._stderr[-30:]))
        return dict(json.loads(line))

    def command(self, op: str, **args: Any) -> Any:
        """Run one command and return its value (raises BrowserError when it failed)."""
        assert self.proc.stdin is not None
        self._next += 1
        self.proc.stdin.write(json.dumps({"id": self._next, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        while True:
            answer = self._read()
            if answer.get("id") == self._next:
                break
        if not answer.get("ok"):
            raise BrowserError(f"{op} {args}: {answer.get('error')}")
        return answer.get("value")

    def open(self, name: str, url: str, width: int = 1200, height: int = 800) -> Page:
        """A new page, in a browser context of its own, at ``url``."""
        self.command("open", page=name, url=url, width=width, height=height)
        return Page(self, name)

    def close(self) -> None:
        """Close the browser and end the driver."""
        if self.proc.poll() is not None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


class Page:
    """One page of the browser."""

    def __init__(self, browser: Browser, name: str) -> None:
        self.browser = browser
        self.name = name

    def _do(self, op: str, **args: Any) -> Any:
        return self.browser.command(op, page=self.name, **args)

    def goto(self, url: str) -> None:
        self._do("goto", url=url)

    def fill(self, selector: str, text: str) -> None:
        self._do("fill", selector=selector, text=text)

    def press(self, selector: str, key: str) -> None:
        self._do("press", selector=selector, key=key)

    def click(self, selector: str) -> None:
        self._do("click", selector=selector)

    def wait(self, expression: str, timeout: float = 10.0) -> Any:
        """Wait until the JS ``expression`` is truthy in the page; returns its value."""
        return self._do("wait", expression=expression, timeout=int(timeout * 1000))

    def evaluate(self, expression: str) -> Any:
        return self._do("evaluate", expression=expression)

    def text(self, selector: str) -> str:
        return str(self._do("text", selector=selector))

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._do("screenshot", path=str(path), fullPage=full_page)
        return path

    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions of the page so far."""
        return list(self._do("errors"))

    def console(self) -> list[str]:
        return list(self._do("console"))

    def close(self) -> None:
        self._do("close")
