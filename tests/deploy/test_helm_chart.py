"""The Helm chart: lint, renders under several value sets, strict schema validation of every
render, and the properties the manifests must keep (probes, drain, secrets, security)."""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import manifests as m
from .conftest import CHART_DIR, RELEASE, REPO_ROOT, Doc, Tools, helm_template, run

FULLNAME = f"{RELEASE}-hubplane"
AFFINITY = "nginx.ingress.kubernetes.io/affinity"

EVERYTHING: Doc = {
    "hubs": [
        {"path": "/hubs/chat", "hub": "myapp.hubs:ChatHub"},
        {"path": "/hubs/admin", "hub": "myapp.hubs:AdminHub"},
    ],
    "corsOrigins": ["https://app.example.com"],
    "redis": {"internal": {"enabled": True}},
    "tokenSecret": {"value": "a-shared-secret"},
    "ingress": {
        "enabled": True,
        "cookieAffinity": True,
        "tls": [{"secretName": "hubplane-tls", "hosts": ["hubplane.local"]}],
    },
    "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80},
    "podDisruptionBudget": {"enabled": True},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "metrics": {"scrapeAnnotations": True},
    "extraEnv": [{"name": "HUBPLANE_KEEPALIVE_INTERVAL", "value": "10"}],
    "podAnnotations": {"example.com/team": "realtime"},
}
STICKY: Doc = {
    "replicaCount": 3,
    "redis": {"url": "redis://redis.example:6379/0"},
    "ingress": {"enabled": True, "cookieAffinity": True},
    "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
}
NO_STICKY: Doc = {
    "redis": {"existingSecret": "my-redis", "existingSecretKey": "url", "durableResume": True},
    "tokenSecret": {"existingSecret": "my-token"},
    "workers": 2,
    "drainTimeout": 120,
    "preStopSleep": 0,
    "probes": {"startup": {"enabled": False}},
    "ingress": {"enabled": True, "className": "traefik", "streamTimeout": 0},
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 6},
    "serviceMonitor": {"enabled": True},
}
CONFIGS = {"defaults": {}, "everything": EVERYTHING, "sticky": STICKY, "no-sticky": NO_STICKY}
EXISTING_SECRETS = {"my-redis", "my-token"}


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def rendered(
    request: pytest.FixtureRequest, render_chart: Callable[..., list[Doc]]
) -> tuple[Doc, list[Doc]]:
    values = CONFIGS[request.param]
    return values, render_chart(values)


def test_helm_lint_strict(tools: Tools, tmp_path: Path) -> None:
    result = run([tools.helm, "lint", "--strict", str(CHART_DIR)])
    assert result.returncode == 0, result.stdout + result.stderr
    for name, values in CONFIGS.items():
        values_file = tmp_path / f"{name}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        result = run([tools.helm, "lint", "--strict", str(CHART_DIR), "-f", str(values_file)])
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


def test_renders_validate_strictly(
    rendered: tuple[Doc, list[Doc]], validate: Callable[[Sequence[Doc]], None]
) -> None:
    _, docs = rendered
    validate(docs)
    for monitor in m.by_kind(docs, "ServiceMonitor"):
        m.check_service_monitor(docs, monitor)


def test_probes_shutdown_and_security(rendered: tuple[Doc, list[Doc]]) -> None:
    values, docs = rendered
    deployment = m.hubplane_deployment(docs)
    c = m.container(deployment)
    m.check_probes(c)
    m.check_security(deployment)
    m.check_service(docs, deployment)
    sleep, drain, grace = m.check_shutdown(docs, deployment)
    assert sleep == values.get("preStopSleep", 5)
    assert drain == values.get("drainTimeout", 30)
    assert grace == sleep + drain + 10
    assert ("lifecycle" in c) == (sleep > 0)
    assert ("startupProbe" in c) == values.get("probes", {}).get("startup", {}).get("enabled", True)


def test_environment(rendered: tuple[Doc, list[Doc]]) -> None:
    values, docs = rendered
    deployment = m.hubplane_deployment(docs)
    env = m.env_of(docs, m.container(deployment))
    assert env["HUBPLANE_DRAIN_TIMEOUT"] == str(values.get("drainTimeout", 30))
    assert env["HUBPLANE_HOST"] == "0.0.0.0"
    assert env["HUBPLANE_PORT"] == "8000"
    assert env["HUBPLANE_WORKERS"] == str(values.get("workers", 1))
    assert env["HUBPLANE_LOG_FORMAT"] == values.get("logFormat", "json")
    hubs = values.get("hubs")
    if hubs:
        assert env["HUBPLANE_HUBS"] == ",".join(f"{h['path']}={h['hub']}" for h in hubs)
    else:
        assert "HUBPLANE_HUBS" not in env
    redis = values.get("redis", {})
    if redis:
        ref = m.check_redis_url_from_secret(docs, deployment, EXISTING_SECRETS)
        if redis.get("existingSecret"):
            assert ref == {"name": redis["existingSecret"], "key": redis["existingSecretKey"]}
        durable = "true" if redis.get("durableResume") else "false"
        assert env["HUBPLANE_DURABLE_RESUME"] == durable
    else:
        assert "REDIS_URL" not in env, "no Redis configured: the pod runs standalone"
        assert "HUBPLANE_DURABLE_RESUME" not in env, "it needs Redis"
    token = values.get("tokenSecret", {})
    if token:
        ref = env["HUBPLANE_TOKEN_SECRET"]["secretKeyRef"]
        if token.get("existingSecret"):
            assert ref["name"] == token["existingSecret"]
        else:
            assert m.secret_value(docs, ref["name"], ref["key"]) == token["value"]
    else:
        assert "HUBPLANE_TOKEN_SECRET" not in env
    for extra in values.get("extraEnv", []):
        assert env[extra["name"]] == extra["value"]


def test_internal_redis_is_wired_through_the_secret(render_chart: Callable[..., list[Doc]]) -> None:
    docs = render_chart({"redis": {"internal": {"enabled": True}}, "replicaCount": 2})
    deployment = m.hubplane_deployment(docs)
    ref = m.check_redis_url_from_secret(docs, deployment)
    url = m.secret_value(docs, ref["name"], ref["key"])
    redis_service = m.one(docs, "Service", f"{FULLNAME}-redis")
    assert url == f"redis://{redis_service['metadata']['name']}:6379/0"
    assert redis_service["spec"]["ports"][0]["port"] == 6379
    redis = m.one(docs, "Deployment", f"{FULLNAME}-redis")
    assert redis["spec"]["replicas"] == 1
    assert m.selects(
        redis_service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"]
    )
    pod_annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" in pod_annotations, "a changed URL must roll the pods"


def test_autoscaling_switch(render_chart: Callable[..., list[Doc]]) -> None:
    off = render_chart({"redis": {"url": "redis://r:6379/0"}, "replicaCount": 3})
    assert not m.by_kind(off, "HorizontalPodAutoscaler")
    assert m.hubplane_deployment(off)["spec"]["replicas"] == 3

    on = render_chart({"redis": {"url": "redis://r:6379/0"}, "autoscaling": {"enabled": True}})
    hpa = m.one(on, "HorizontalPodAutoscaler")
    deployment = m.hubplane_deployment(on)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert [x["resource"]["name"] for x in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_pod_disruption_budget_switch(render_chart: Callable[..., list[Doc]]) -> None:
    assert not m.by_kind(render_chart(), "PodDisruptionBudget")
    docs = render_chart({"podDisruptionBudget": {"enabled": True}})
    pdb = m.check_pdb(docs, m.hubplane_deployment(docs))
    assert pdb["spec"]["maxUnavailable"] == 1
    docs = render_chart({"podDisruptionBudget": {"enabled": True, "minAvailable": "50%"}})
    assert m.check_pdb(docs, m.hubplane_deployment(docs))["spec"]["minAvailable"] == "50%"


def ingress_annotations(docs: list[Doc]) -> dict[str, str]:
    return dict(m.one(docs, "Ingress")["metadata"].get("annotations", {}))


def test_cookie_affinity_switch(render_chart: Callable[..., list[Doc]]) -> None:
    assert not m.by_kind(render_chart(), "Ingress")

    off = ingress_annotations(render_chart({"ingress": {"enabled": True}}))
    assert not [k for k in off if "affinity" in k or "session-cookie" in k], off
    assert off["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert off["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"

    on = ingress_annotations(
        render_chart(
            {
                "ingress": {
                    "enabled": True,
                    "cookieAffinity": True,
                    "affinityCookie": {"name": "hp-node", "maxAge": 3600},
                    "annotations": {"example.com/owner": "me"},
                }
            }
        )
    )
    assert on[AFFINITY] == "cookie"
    assert on["nginx.ingress.kubernetes.io/session-cookie-name"] == "hp-node"
    assert on["nginx.ingress.kubernetes.io/session-cookie-max-age"] == "3600"
    assert on["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert on["example.com/owner"] == "me"


def test_ingress_routes_to_the_service(render_chart: Callable[..., list[Doc]]) -> None:
    docs = render_chart(EVERYTHING)
    ingress = m.one(docs, "Ingress")
    service = m.check_service(docs, m.hubplane_deployment(docs))
    assert ingress["spec"]["ingressClassName"] == "nginx"
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] == "http"
    assert ingress["spec"]["tls"] == [{"secretName": "hubplane-tls", "hosts": ["hubplane.local"]}]


def test_service_monitor(render_chart: Callable[..., list[Doc]]) -> None:
    assert not m.by_kind(render_chart(), "ServiceMonitor")
    docs = render_chart(EVERYTHING)
    monitor = m.one(docs, "ServiceMonitor")
    m.check_service_monitor(docs, monitor)
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_metrics_switch(render_chart: Callable[..., list[Doc]]) -> None:
    docs = render_chart({"metrics": {"enabled": False}})
    env = m.env_of(docs, m.container(m.hubplane_deployment(docs)))
    assert env["HUBPLANE_METRICS"] == "false"
    docs = render_chart({"metrics": {"scrapeAnnotations": True}})
    annotations = m.hubplane_deployment(docs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_grace_period_follows_the_values(render_chart: Callable[..., list[Doc]]) -> None:
    docs = render_chart({"drainTimeout": 50, "preStopSleep": 7, "terminationGraceMargin": 3})
    deployment = m.hubplane_deployment(docs)
    assert m.check_shutdown(docs, deployment) == (7, 50, 60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=abc"], "replicaCount"),
        (["--set", "replicaCuont=2"], "replicaCuont"),
        (["--set", "ingress.cookieAfinity=true"], "cookieAfinity"),
        (["--set", "logLevel=loud"], "logLevel"),
        (["--set", "logFormat=yaml"], "logFormat"),
        (["--set", "drainTimeout=0"], "drainTimeout"),
        (["--set", "redis.url=http://redis:6379"], "url"),
        (["--set", "hubs[0].path=/hubs/chat,hubs[0].hub=nocolon"], "hub"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    ],
    ids=lambda v: v if isinstance(v, str) else v[-1],
)
def test_schema_rejects_bad_values(tools: Tools, args: list[str], message: str) -> None:
    result = helm_template(tools, None, *args)
    assert result.returncode != 0, f"{args} rendered:\n{result.stdout[:500]}"
    assert "schema" in result.stderr and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "needs the Redis backplane"),
        ({"autoscaling": {"enabled": True}}, "needs the Redis backplane"),
        ({"workers": 4}, "needs the Redis backplane"),
        ({"serviceMonitor": {"enabled": True}, "metrics": {"enabled": False}}, "metrics.enabled"),
        (
            {"redis": {"internal": {"enabled": True}, "existingSecret": "mine"}},
            "exclude each other",
        ),
        (
            {
                "redis": {"url": "redis://r"},
                "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
            },
            "minReplicas",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_message(tools: Tools, values: Doc, message: str) -> None:
    result = helm_template(tools, values)
    assert result.returncode != 0, result.stdout[:500]
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("config", ["defaults", "everything", "no-sticky"])
def test_notes_render(tools: Tools, tmp_path: Path, config: str) -> None:
    """NOTES.txt is not rendered by helm template: render it as a template of a copy."""
    chart = tmp_path / "hubplane"
    shutil.copytree(CHART_DIR, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "{{- end }}\n"
    )
    (chart / "templates" / "notes.yaml").write_text('notes: {{ include "test.notes" . | quote }}\n')
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(CONFIGS[config]))
    result = run(
        [
            tools.helm,
            "template",
            RELEASE,
            str(chart),
            "-f",
            str(values_file),
            "--show-only",
            "templates/notes.yaml",
        ]
    )
    assert result.returncode == 0, result.stderr
    text: Any = yaml.safe_load(result.stdout)["notes"]
    assert "terminationGracePeriodSeconds is" in text
    assert "/healthz" in text and "/readyz" in text


def test_schema_covers_values_yaml() -> None:
    """Every key of values.yaml is in the schema, and the chart's own objects refuse unknown keys
    (pass-through Kubernetes objects such as resources are left open: the API validates them)."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())

    def walk(value: Any, node: Doc, where: str) -> None:
        if not isinstance(value, dict) or "properties" not in node:
            return
        assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
        for key, item in value.items():
            assert key in node["properties"], f"{where}.{key} is not in values.schema.json"
            walk(item, node["properties"][key], f"{where}.{key}")

    walk(values, schema, "values")


def test_versions_agree() -> None:
    """The chart's appVersion, the kustomize base's image tag and the package version agree."""
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == version
    base = yaml.safe_load((REPO_ROOT / "deploy" / "base" / "kustomization.yaml").read_text())
    assert [i["newTag"] for i in base["images"] if i["name"] == "hubplane"] == [version]
