"""Fixtures for the deployment tests: the tools, and rendering and validating manifests.

The tools are never optional here: a missing one fails the test with what to run, so that CI
cannot go green by skipping the checks.

- ``tools`` (session): paths of helm, kubectl, kubernetes-validate and hadolint
- ``render_chart(values)``: ``helm template`` the chart with a values dict, parsed
- ``render_kustomize(dir)``: ``kubectl kustomize`` a directory, parsed
- ``validate(docs)``: ``kubernetes-validate --strict`` the documents (ServiceMonitors aside)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "hubplane"
DEPLOY_DIR = REPO_ROOT / "deploy"
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
KUBERNETES_VERSION = "1.30.0"
RELEASE = "hp"
NAMESPACE = "hubplane"
# Custom resources: kubernetes-validate has no schema for them; tests check their shape.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
COMMAND_TIMEOUT = 60

Doc = dict[str, Any]


@dataclass(frozen=True)
class Tools:
    helm: str
    kubectl: str
    kubernetes_validate: str
    hadolint: str


def _find(name: str, *places: Path) -> str | None:
    for place in places:
        candidate = place / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


@pytest.fixture(scope="session")
def tools() -> Tools:
    """The binaries, from .tools/bin (scripts/k8s-tools.sh), the venv, then PATH."""
    venv_bin = Path(sys.executable).parent
    found = {
        "helm": _find("helm", TOOLS_BIN),
        "kubectl": _find("kubectl", TOOLS_BIN),
        "kubernetes_validate": _find("kubernetes-validate", venv_bin),
        "hadolint": _find("hadolint", venv_bin),
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: run `make test` (or `scripts/k8s-tools.sh` for helm "
            "and kubectl, and `pip install -e '.[test]'` for kubernetes-validate and hadolint)"
        )
    return Tools(**{k: v for k, v in found.items() if v is not None})


def run(args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a bounded time, capturing its output as text."""
    return subprocess.run(
        list(args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        cwd=REPO_ROOT,
    )


def parse(text: str) -> list[Doc]:
    """The non-empty documents of a YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template(
    tools: Tools, values: Doc | None = None, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``helm template`` the chart with ``values`` (a values file) and extra arguments."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as handle:
        yaml.safe_dump(values or {}, handle)
        handle.flush()
        return run(
            [
                tools.helm,
                "template",
                RELEASE,
                str(CHART_DIR),
                "--namespace",
                NAMESPACE,
                "--kube-version",
                KUBERNETES_VERSION,
                "--values",
                handle.name,
                *extra,
            ]
        )


@pytest.fixture
def render_chart(tools: Tools) -> Callable[..., list[Doc]]:
    """``render_chart(values, *args)``: the chart's documents; fails when helm fails."""

    def render(values: Doc | None = None, *extra: str) -> list[Doc]:
        result = helm_template(tools, values, *extra)
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        return parse(result.stdout)

    return render


@pytest.fixture
def render_kustomize(tools: Tools) -> Callable[[Path], list[Doc]]:
    """``render_kustomize(dir)``: the documents ``kubectl kustomize dir`` builds."""

    def render(directory: Path) -> list[Doc]:
        result = run([tools.kubectl, "kustomize", str(directory)])
        assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
        return parse(result.stdout)

    return render


def validate_documents(tools: Tools, docs: Sequence[Doc]) -> None:
    """kubernetes-validate --strict every document but custom resources; AssertionError if any
    is invalid or has no schema (a misspelt apiVersion must not pass unnoticed)."""
    standard = [d for d in docs if (d.get("apiVersion"), d.get("kind")) not in CUSTOM_KINDS]
    assert standard, "nothing to validate"
    result = run(
        [tools.kubernetes_validate, "--strict", "-k", KUBERNETES_VERSION, "-"],
        stdin=yaml.safe_dump_all(standard),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"kubernetes-validate rejected the manifests:\n{output}"
    problems = [line for line in output.splitlines() if not line.startswith("INFO")]
    assert not problems, "kubernetes-validate did not pass everything:\n" + "\n".join(problems)
    passed = [line for line in output.splitlines() if " passed for resource " in line]
    assert len(passed) == len(standard), output


@pytest.fixture
def validate(tools: Tools) -> Callable[[Sequence[Doc]], None]:
    """``validate(docs)``: see validate_documents."""
    return lambda docs: validate_documents(tools, docs)
