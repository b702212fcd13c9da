"""The Dockerfile: hadolint clean, and what can be checked without a Docker engine.

The final stage must run ``hubplane serve`` as uid 10001 on the port the settings default to,
with a health check through ``hubplane healthcheck``, and hold no build tools.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.cli import COMMANDS
from server.settings import Settings

from .conftest import REPO_ROOT, Tools, run

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
MAKEFILE = REPO_ROOT / "Makefile"
UID = "10001"
BUILD_TOOLS = {
    "gcc",
    "g++",
    "cc",
    "clang",
    "make",
    "build-essential",
    "python3-dev",
    "libc6-dev",
    "libc-dev",
    "cargo",
    "rustc",
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {args!r}: use the KEY=value form"
                values[key] = value
        return values


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined, comments and blank lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends in a line continuation"
    return lines


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """The build stages, with global ARG defaults substituted in FROM."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    parsed = parse_dockerfile()
    assert len(parsed) >= 2, "the image must be built in several stages"
    return parsed


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def build_stage(stages: list[Stage]) -> Stage:
    """The stage that builds the venv (named ``build``)."""
    found = [stage for stage in stages if stage.name == "build"]
    assert len(found) == 1, "name the stage that builds the venv 'build'"
    return found[0]


def web_stage(stages: list[Stage]) -> Stage:
    """The stage that installs the SignalR browser bundle with npm (named ``web``)."""
    found = [stage for stage in stages if stage.name == "web"]
    assert len(found) == 1, "name the stage that installs the browser bundle 'web'"
    return found[0]


def test_hadolint_passes(tools: Tools) -> None:
    result = run([tools.hadolint, "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.strip(), result.stdout


def test_hadolint_catches_a_bad_dockerfile(tools: Tools, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    result = run([tools.hadolint, str(bad)])
    assert result.returncode != 0
    assert "DL3008" in result.stdout  # unpinned apt package
    assert "DL3007" in result.stdout  # :latest


def test_slim_python_311_base(stages: list[Stage]) -> None:
    for stage in stages:
        if stage.name == "web":  # npm only; nothing of it but the bundle reaches the image
            assert re.fullmatch(
                r"node:\d+\.\d+\.\d+-\w+-slim(@sha256:[0-9a-f]{64})?", stage.base
            ), stage.base
            continue
        assert re.fullmatch(
            r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", stage.base
        ), stage.base


def test_final_stage_runs_as_uid_10001(final: Stage) -> None:
    user = final.last("USER")
    assert user.split(":")[0] == UID, user
    assert user.split(":")[0] not in ("root", "0")
    created = " ".join(final.all("RUN"))
    assert f"--uid {UID}" in created, "the user must be created with the uid USER names"


def test_entrypoint_is_hubplane_serve(final: Stage) -> None:
    assert json.loads(final.last("ENTRYPOINT")) == ["hubplane", "serve"]
    assert not final.all("CMD"), "arguments after the image name go to hubplane serve"
    assert "serve" in COMMANDS
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["hubplane"] == "server.cli:main"


def test_exposed_port_matches_the_settings(final: Stage) -> None:
    env = final.env()
    exposed = final.last("EXPOSE").split()
    assert exposed == [env["HUBPLANE_PORT"]], (exposed, env["HUBPLANE_PORT"])
    assert int(env["HUBPLANE_PORT"]) == Settings().port
    assert env["HUBPLANE_HOST"] == "0.0.0.0"


def test_python_environment(final: Stage) -> None:
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/hubplane/bin:")
    assert final.last("STOPSIGNAL") == "SIGTERM"


def test_healthcheck_uses_the_cli(final: Stage) -> None:
    check = final.last("HEALTHCHECK")
    options, sep, command = check.partition("CMD ")
    assert sep, check
    assert json.loads(command) == ["hubplane", "healthcheck"]
    assert "healthcheck" in COMMANDS
    assert re.search(r"--timeout=\d+s", options), options


def test_final_stage_copies_only_the_venv_from_the_build_stage(
    stages: list[Stage], final: Stage
) -> None:
    build = build_stage(stages)
    copies = final.all("COPY")
    assert copies, "the final stage copies the venv"
    for copy in copies:
        assert copy.startswith(f"--from={build.name} "), f"COPY {copy}: only from {build.name}"
    assert any(copy.split()[1:] == ["/opt/hubplane", "/opt/hubplane"] for copy in copies), copies
    assert not final.all("ADD")
    # uv builds the venv there (uv sync into UV_PROJECT_ENVIRONMENT)
    assert build.env().get("UV_PROJECT_ENVIRONMENT") == "/opt/hubplane", build.env()


def test_no_build_tools_in_the_final_stage(final: Stage) -> None:
    for command in final.all("RUN"):
        words = set(re.split(r"[\s;&|]+", command))
        assert not words & BUILD_TOOLS, f"build tools in the final stage: {command}"
        assert "apt-get" not in words and "apk" not in words, command
        assert "pip" not in command, f"install in the build stage, not here: {command}"


def test_build_stage_needs_no_compiler(stages: list[Stage]) -> None:
    # every dependency from a wheel: uv's --no-build refuses to build a source distribution
    installs = [r for r in build_stage(stages).all("RUN") if "uv sync" in r]
    assert installs and all("--no-build" in r for r in installs), installs


def test_build_stage_installs_from_the_lock(stages: list[Stage]) -> None:
    """Every package of the image comes from uv.lock, with the uv the Makefile pins."""
    build = build_stage(stages)
    copies = [copy.split()[:-1] for copy in build.all("COPY")]
    assert any("uv.lock" in sources for sources in copies), copies
    runs = build.all("RUN")
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs and all("--locked" in r for r in syncs), syncs
    assert any("--no-editable" in r for r in syncs), "the venv must not point into /src"
    # the only other install is uv itself, pinned to the Makefile's version
    pip_installs = [r for r in runs if "pip install" in r]
    assert len(pip_installs) == 1 and '"uv==${UV_VERSION}"' in pip_installs[0], pip_installs
    uv_arg = [a for a in build.all("ARG") if a.startswith("UV_VERSION=")]
    make_pin = re.search(r"^UV_VERSION\s*:=\s*(\S+)", MAKEFILE.read_text(), re.M)
    assert uv_arg and make_pin, (uv_arg, make_pin)
    assert uv_arg[0].partition("=")[2] == make_pin.group(1)


def test_dockerignore_lets_in_what_the_build_copies(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allowlist: everything is excluded, then let in"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    excluded = {p.rstrip("/") for p in patterns[1:] if not p.startswith("!")}

    def let_in(source: str) -> bool:
        parts = Path(source.rstrip("/")).parts
        prefixes = {"/".join(parts[: i + 1]) for i in range(len(parts))}
        return bool(prefixes & allowed) and not prefixes & excluded

    for stage in stages:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            for source in copy.split()[:-1]:
                assert let_in(source), f"COPY {source} is excluded by .dockerignore"
                assert (REPO_ROOT / source).exists(), source
    assert {"pyproject.toml", "uv.lock", "README.md", "backplane", "server"} <= allowed
    # the bundle comes from npm ci in the web stage, never from a local node_modules
    assert not let_in("server/static/node_modules/@microsoft/signalr")


def test_web_stage_installs_the_browser_bundle_from_the_lock(stages: list[Stage]) -> None:
    """The demo page's SignalR bundle: npm ci from server/static's lock, only it copied on."""
    web = web_stage(stages)
    assert stages.index(web) < stages.index(build_stage(stages))
    copies = [copy.split() for copy in web.all("COPY")]
    assert copies == [["server/static/package.json", "server/static/package-lock.json", "./"]], (
        copies
    )
    runs = web.all("RUN")
    assert runs and all(r.startswith("npm ci") for r in runs), runs
    assert not any("npm install" in r for r in runs)
    from_web = [c for c in build_stage(stages).all("COPY") if c.startswith("--from=web ")]
    sources = sorted(c.split()[1] for c in from_web)
    assert sources == [
        "/web/node_modules/@microsoft/signalr/dist/browser/signalr.min.js",
        "/web/node_modules/@microsoft/signalr/package.json",
    ], sources
    # the venv is checked for the bundle once it is installed
    assert any("bundle_version()" in r for r in build_stage(stages).all("RUN"))
