"""The validation itself can fail: broken manifests are rejected, so a green run means something."""

from __future__ import annotations

import copy

import pytest
import yaml

from .conftest import KUBERNETES_VERSION, Doc, Tools, run, validate_documents

GOOD: Doc = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "hubplane"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "hubplane"}},
        "template": {
            "metadata": {"labels": {"app": "hubplane"}},
            "spec": {"containers": [{"name": "hubplane", "image": "hubplane:0.1.0"}]},
        },
    },
}


def broken(path: list[str | int], value: object) -> Doc:
    doc = copy.deepcopy(GOOD)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def test_a_good_deployment_passes(tools: Tools) -> None:
    validate_documents(tools, [GOOD])


@pytest.mark.parametrize(
    "doc",
    [
        broken(["spec", "replicas"], "two"),
        broken(["spec", "template", "spec", "containers", 0, "imagePullPolicy"], 1),
        broken(
            ["spec", "template", "spec", "containers", 0, "livenessProbe"],
            {"httpGet": {"path": "/healthz", "prot": 8000}},
        ),
        broken(["spec", "replica"], 2),  # unknown field: only --strict catches it
    ],
    ids=["replicas-string", "wrong-type", "unknown-probe-field", "unknown-field"],
)
def test_invalid_manifests_fail(tools: Tools, doc: Doc) -> None:
    result = run(
        [tools.kubernetes_validate, "--strict", "-k", KUBERNETES_VERSION, "-"],
        stdin=yaml.safe_dump(doc),
    )
    assert result.returncode != 0, result.stdout
    with pytest.raises(AssertionError):
        validate_documents(tools, [GOOD, doc])


def test_an_unknown_api_version_fails(tools: Tools) -> None:
    """kubernetes-validate only warns about a kind it has no schema for; we fail."""
    with pytest.raises(AssertionError, match="did not pass everything"):
        validate_documents(tools, [broken(["apiVersion"], "apps/v2")])
