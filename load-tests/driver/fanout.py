"""Spreading connections over driver processes and merging what they measured.

Open files are capped per process (about 20,000 here), so a large fleet needs several
processes; each runs ``worker.worker_main`` on its own event loop, pinned to the driver's cores.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from hdrh.histogram import HdrHistogram

from .worker import new_histogram, worker_main


def merge(encoded: list[str]) -> HdrHistogram:
    """One histogram from the workers' encoded ones."""
    total = new_histogram()
    for text in encoded:
        total.add(HdrHistogram.decode(text))
    return total


def summary(hist: HdrHistogram) -> dict[str, float]:
    """Count and percentiles in milliseconds."""
    if hist.get_total_count() == 0:
        return {"count": 0}
    out: dict[str, float] = {"count": hist.get_total_count()}
    for p in (50, 90, 99, 99.9):
        out[f"p{p:g}"] = hist.get_value_at_percentile(p) / 1000
    out["max"] = hist.get_max_value() / 1000
    out["mean"] = hist.get_mean_value() / 1000
    return out


class Fleet:
    """``cfg['connections']`` connections over ``processes`` driver processes."""

    def __init__(self, cfg: dict[str, Any], processes: int, cpus: set[int] | None) -> None:
        total = cfg["connections"]
        processes = max(1, min(processes, total))
        # A user's connections stay in one process (their loop closes there): slices are
        # whole multiples of ``align``.
        align = max(1, int(cfg.get("align", 1)))
        blocks = -(-total // align)
        processes = min(processes, blocks)
        context = multiprocessing.get_context("spawn")
        self.processes = processes
        self.pipes: list[Connection] = []
        self.procs: list[BaseProcess] = []
        first = 0
        for i in range(processes):
            share = blocks // processes + (1 if i < blocks % processes else 0)
            count = min(share * align, total - first)
            part = {**cfg, "first": first, "count": count, "cpus": cpus}
            first += count
            parent, child = context.Pipe()
            proc = context.Process(target=worker_main, args=(part, child), daemon=True)
            self.pipes.append(parent)
            self.procs.append(proc)

    def pids(self) -> list[int]:
        """The driver processes (to tell whether the driver, not the server, was the limit)."""
        return [p.pid for p in self.procs if p.pid is not None]

    def _gather(self, verb: str, timeout: float) -> list[Any]:
        answers = []
        deadline = time.monotonic() + timeout
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            while not pipe.poll(0.1):
                if not proc.is_alive():
                    raise RuntimeError(f"driver process {proc.pid} died (exit {proc.exitcode})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"driver processes gave no {verb!r} within {timeout} s")
            got, arg = pipe.recv()
            if got != verb:
                raise RuntimeError(f"driver process said {got!r}, expected {verb!r}")
            answers.append(arg)
        return answers

    def start(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Start the processes; return when every connection is up (or failed)."""
        for proc in self.procs:
            proc.start()
        return self._gather("ready", timeout)

    def go(
        self, duration: float, grace: float, rate: float | None = None, delay: float = 0.3
    ) -> int:
        """Start the load everywhere at the same monotonic time; return it (ns).

        ``rate`` (messages per second over the whole fleet) makes the load open-loop; each
        process takes its share.
        """
        start_ns = time.monotonic_ns() + int(delay * 1e9)
        for pipe in self.pipes:
            share = None if rate is None else rate / len(self.pipes)
            order = {"start": start_ns, "duration": duration, "grace": grace, "rate": share}
            pipe.send(("go", order))
        return start_ns

    def results(self, timeout: float) -> dict[str, Any]:
        """Wait for the run to end; the workers' figures, summed, histograms merged."""
        parts = self._gather("done", timeout)
        out: dict[str, Any] = {}
        for key in (
            "connected",
            "sent",
            "received",
            "in_window",
            "in_tail",
            "frames",
            "disconnects",
            "connect_errors",
            "cycles",
            "cycle_errors",
        ):
            out[key] = sum(p[key] for p in parts)
        out["latency"] = summary(merge([p["hist"] for p in parts]))
        out["cross_latency"] = summary(merge([p["cross_hist"] for p in parts]))
        out["connect_latency"] = summary(merge([p["connect_hist"] for p in parts]))
        return out

    def close(self) -> None:
        """Close every connection and end the processes."""
        for pipe in self.pipes:
            try:
                pipe.send(("close", None))
            except OSError:
                pass
        try:
            self._gather("closed", 30)
        except (RuntimeError, TimeoutError, EOFError):
            pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
