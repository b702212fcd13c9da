#!/usr/bin/env python3
"""The benchmark peers' pins follow uv.lock.

Every ``name==version`` line of ``load-tests/peers/requirements-*.txt`` whose package is also
in ``uv.lock`` must pin the lock's version, so the bare app and the peers run on the same
uvicorn, websockets, redis-py, ... as hubplane. A line ending in ``# own pin: <why>`` is left
alone (a peer that cannot run on the lock's version says why).

    scripts/peer-pins.py           list the pins that differ from the lock (exit 1 if any)
    scripts/peer-pins.py --write   rewrite them to the lock's versions
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)(?P<extras>\[[^\]]*\])?==(?P<version>[^\s#;]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path) -> dict[str, str]:
    data = tomllib.loads(lock.read_text(encoding="utf-8"))
    return {normalize(p["name"]): p["version"] for p in data["package"] if "version" in p}


def stale_pins(root: Path = ROOT) -> list[tuple[Path, int, str, str, str]]:
    """(file, line number, package, pinned, locked) for each pin that differs from the lock."""
    locked = locked_versions(root / "uv.lock")
    found = []
    for req in sorted((root / "load-tests" / "peers").glob("requirements-*.txt")):
        for number, line in enumerate(req.read_text(encoding="utf-8").splitlines(), 1):
            match = PIN.match(line)
            if match is None or "# own pin:" in line:
                continue
            name = normalize(match["name"])
            if name in locked and match["version"] != locked[name]:
                found.append((req, number, name, match["version"], locked[name]))
    return found


def main() -> int:
    stale = stale_pins()
    if "--write" in sys.argv[1:]:
        for req in {s[0] for s in stale}:
            lines = req.read_text(encoding="utf-8").splitlines(keepends=True)
            for path, number, _name, pinned, locked in stale:
                if path == req:
                    lines[number - 1] = lines[number - 1].replace(f"=={pinned}", f"=={locked}", 1)
            req.write_text("".join(lines), encoding="utf-8")
        for path, _number, name, pinned, locked in stale:
            print(f"{path.relative_to(ROOT)}: {name} {pinned} -> {locked}")
        return 0
    for path, number, name, pinned, locked in stale:
        print(f"{path.relative_to(ROOT)}:{number}: {name}=={pinned}, the lock has {locked}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
