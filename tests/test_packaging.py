"""The browser bundle of the demo page: pinned, locked, never committed, carried by the wheel."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
WEB = REPO_ROOT / "server" / "static"
BUNDLE = "server/static/node_modules/@microsoft/signalr/dist/browser/signalr.min.js"


def _json(path: Path) -> dict[str, object]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def test_the_bundle_is_pinned_and_locked_like_the_test_clients() -> None:
    web = _json(WEB / "package.json")["dependencies"]
    tests = _json(REPO_ROOT / "tests" / "node" / "package.json")["dependencies"]
    assert isinstance(web, dict) and isinstance(tests, dict)
    assert web == {"@microsoft/signalr": tests["@microsoft/signalr"]}, web
    for folder in (WEB, REPO_ROOT / "tests" / "node"):
        lock = _json(folder / "package-lock.json")
        packages = lock["packages"]
        assert isinstance(packages, dict)
        for name, version in _json(folder / "package.json")["dependencies"].items():  # type: ignore[union-attr]
            assert version[0].isdigit(), f"{folder.name}: pin {name} exactly, not {version}"
            entry = packages[f"node_modules/{name}"]
            assert entry["version"] == version, (folder, name)
        for path, entry in packages.items():
            if path:
                assert str(entry.get("integrity", "")).startswith("sha512-"), (folder, path)


def test_no_bundle_is_committed() -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [f for f in files if "node_modules/" in f or f.endswith("signalr.min.js")]


def test_the_wheel_carries_the_pages_and_the_bundle(tmp_path: Path) -> None:
    uv = REPO_ROOT / ".tools" / "uv" / "bin" / "uv"
    if not uv.exists():
        pytest.skip("no pinned uv in .tools/uv (make venv sets it up)")
    if not (REPO_ROOT / BUNDLE).exists():
        subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "node-deps.sh"), "server/static"],
            check=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    subprocess.run(
        [str(uv), "build", "--wheel", "--quiet", "-o", str(tmp_path), str(REPO_ROOT)],
        check=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    (wheel,) = tmp_path.glob("hubplane-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for page in ("demo.html", "demo.js", "dashboard.html", "dashboard.js", "hubplane.css"):
        assert f"server/static/{page}" in names, page
    assert BUNDLE in names
    assert not [
        n for n in names if "node_modules" in n and n != BUNDLE and "signalr/package" not in n
    ]
