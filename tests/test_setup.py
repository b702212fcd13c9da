"""The set-up is reproducible: every install comes from uv.lock, and the pins agree with it."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = tomllib.loads((REPO_ROOT / "uv.lock").read_text(encoding="utf-8"))
# The dependencies whose internals hubplane touches (tests/contracts/): an upper bound each.
TOUCHED = ("redis", "uvicorn", "websockets")


def _load_peer_pins() -> object:
    spec = importlib.util.spec_from_file_location(
        "peer_pins", REPO_ROOT / "scripts" / "peer-pins.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requirement(name: str) -> str:
    for req in PYPROJECT["project"]["dependencies"]:
        if re.match(rf"{name}(\[|[<>=!~ ]|$)", req):
            return str(req)
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def test_touched_dependencies_have_an_upper_bound() -> None:
    for name in TOUCHED:
        req = _requirement(name)
        assert "<" in req, f"{req}: hubplane uses its internals, bound the next release"


def test_every_locked_package_has_hashes() -> None:
    for package in LOCK["package"]:
        if package["name"] == "hubplane":
            continue
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files, f"{package['name']}: no file in the lock"
        assert all(f.get("hash", "").startswith("sha256:") for f in files), package["name"]


def test_the_installed_versions_are_the_locked_ones() -> None:
    from importlib.metadata import PackageNotFoundError, version

    locked = {p["name"]: p["version"] for p in LOCK["package"]}
    for name in ("redis", "uvicorn", "websockets", "starlette", "msgpack", "mypy", "ruff"):
        try:
            installed = version(name)
        except PackageNotFoundError:
            raise AssertionError(f"{name} is not installed") from None
        assert installed == locked[name], f"{name} {installed} installed, {locked[name]} locked"


def test_benchmark_peers_follow_the_lock() -> None:
    stale = _load_peer_pins().stale_pins(REPO_ROOT)  # type: ignore[attr-defined]
    assert not stale, "run scripts/peer-pins.py --write: " + ", ".join(
        f"{path.name}: {name}=={pinned} (lock: {locked})" for path, _, name, pinned, locked in stale
    )


def test_make_installs_from_the_lock() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    syncs = re.findall(r"^\t.*\buv sync\b.*$|^\t\$\(UV\) sync.*$", makefile, re.M)
    assert syncs and all("--locked" in s for s in syncs), syncs
    assert "pip install" not in makefile.replace(
        "pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)", ""
    )
