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

from server.settings import Settings, build_settings

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
ADMIN_PORT: Doc = {
    "redis": {"url": "redis://redis.example:6379/0", "queueLimit": 5000, "buffer": 0},
    "admin": {
        "port": 9100,
        "token": {"existingSecret": "my-admin", "existingSecretKey": "token"},
        "dashboard": True,
    },
    "forwardedAllowIps": ["10.244.0.0/16", "fd00::/8"],
    "limits": {
        "maxMessageSize": 0,
        "maxBufferSize": 4194304,
        "maxGroupsPerConnection": 50,
        "maxStreamsPerConnection": 5,
        "streamBufferCapacity": 1,
        "maxPendingNegotiations": 200000,
    },
    "service": {"type": "LoadBalancer"},
    "ingress": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "metrics": {"scrapeAnnotations": True},
}
# A Redis Cluster with sharded pub/sub and durable resume.
REDIS_CLUSTER: Doc = {
    "replicaCount": 3,
    "redis": {
        "url": "redis+cluster://:secret@redis-0.redis:6379,redis-1.redis:6379",
        "pubsub": "sharded",
        "durableResume": True,
    },
}
CONFIGS = {
    "defaults": {},
    "everything": EVERYTHING,
    "sticky": STICKY,
    "no-sticky": NO_STICKY,
    "admin-port": ADMIN_PORT,
    "redis-cluster": REDIS_CLUSTER,
}
EXISTING_SECRETS = {"my-redis", "my-token", "my-admin"}
# limits.* -> its variable, and the server's default, which is the chart's.
LIMITS = {
    "maxMessageSize": ("HUBPLANE_MAX_MESSAGE_SIZE", 32768),
    "maxBufferSize": ("HUBPLANE_MAX_BUFFER_SIZE", 1048576),
    "maxGroupsPerConnection": ("HUBPLANE_MAX_GROUPS_PER_CONNECTION", 1000),
    "maxStreamsPerConnection": ("HUBPLANE_MAX_STREAMS_PER_CONNECTION", 100),
    "streamBufferCapacity": ("HUBPLANE_STREAM_BUFFER_CAPACITY", 10),
    "maxPendingNegotiations": ("HUBPLANE_MAX_PENDING_NEGOTIATIONS", 10000),
}


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
        if redis.get("pubsub"):
            assert env["HUBPLANE_REDIS_PUBSUB"] == redis["pubsub"]
        else:
            assert "HUBPLANE_REDIS_PUBSUB" not in env, "empty: the server's default"
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
    limits = values.get("limits", {})
    for key, (name, default) in LIMITS.items():
        assert env[name] == str(limits.get(key, default)), name
    if redis:
        assert env["HUBPLANE_REDIS_QUEUE_LIMIT"] == str(redis.get("queueLimit", 100000))
        assert env["HUBPLANE_REDIS_BUFFER"] == str(redis.get("buffer", 10000))
    else:
        assert "HUBPLANE_REDIS_QUEUE_LIMIT" not in env and "HUBPLANE_REDIS_BUFFER" not in env
    proxies = values.get("forwardedAllowIps")
    if proxies:
        assert env["HUBPLANE_FORWARDED_ALLOW_IPS"] == ",".join(proxies)
    else:
        assert "HUBPLANE_FORWARDED_ALLOW_IPS" not in env
    assert "HUBPLANE_REST_TRUSTED_PROXIES" not in env
    admin = values.get("admin", {})
    if admin.get("port"):
        assert env["HUBPLANE_ADMIN_PORT"] == str(admin["port"])
        assert env["HUBPLANE_ADMIN_HOST"] == "0.0.0.0"
    else:
        assert "HUBPLANE_ADMIN_PORT" not in env and "HUBPLANE_ADMIN_HOST" not in env
    assert env["HUBPLANE_DASHBOARD"] == ("true" if admin.get("dashboard") else "false")
    if admin.get("token"):
        ref = env["HUBPLANE_ADMIN_TOKEN"]["secretKeyRef"]
        token_values = admin["token"]
        if token_values.get("existingSecret"):
            assert ref == {
                "name": token_values["existingSecret"],
                "key": token_values["existingSecretKey"],
            }
        else:
            assert m.secret_value(docs, ref["name"], ref["key"]) == token_values["value"]
    else:
        assert "HUBPLANE_ADMIN_TOKEN" not in env


def test_the_server_accepts_every_render(rendered: tuple[Doc, list[Doc]]) -> None:
    """The pods' environment passes the server's own validation (secrets stand in for the
    Secrets), and whatever the values leave alone keeps the server's default."""
    values, docs = rendered
    env = m.env_of(docs, m.container(m.hubplane_deployment(docs)))
    plain = {k: v if isinstance(v, str) else "x" * 40 for k, v in env.items()}
    plain.pop("REDIS_URL", None)
    if "REDIS_URL" in env:
        plain["REDIS_URL"] = values.get("redis", {}).get("url") or "redis://redis.example:6379/0"
    settings = build_settings(None, plain)
    defaults = Settings()
    if not values.get("limits"):
        for key in LIMITS:
            name = "".join("_" + c.lower() if c.isupper() else c for c in key)
            assert getattr(settings, name) == getattr(defaults, name), name
    if not values.get("redis", {}).get("queueLimit"):
        assert settings.redis_queue_limit == defaults.redis_queue_limit
        assert settings.redis_buffer == defaults.redis_buffer
    assert settings.redis_reply_timeout == defaults.redis_reply_timeout
    assert settings.dashboard == values.get("admin", {}).get("dashboard", False)


def test_chart_defaults_are_the_server_defaults() -> None:
    """values.yaml's limits and Redis queue bounds are the server's defaults, as it says."""
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    defaults = Settings()
    assert values["limits"] == {
        "maxMessageSize": defaults.max_message_size,
        "maxBufferSize": defaults.max_buffer_size,
        "maxGroupsPerConnection": defaults.max_groups_per_connection,
        "maxStreamsPerConnection": defaults.max_streams_per_connection,
        "streamBufferCapacity": defaults.stream_buffer_capacity,
        "maxPendingNegotiations": defaults.max_pending_negotiations,
    }
    assert {key: default for key, (_, default) in LIMITS.items()} == values["limits"]
    assert values["redis"]["queueLimit"] == defaults.redis_queue_limit
    assert values["redis"]["buffer"] == defaults.redis_buffer
    assert values["redis"]["replyTimeout"] == defaults.redis_reply_timeout
    assert values["redis"]["pubsub"] == "" and defaults.redis_pubsub is None  # "": unset
    assert values["admin"]["dashboard"] is defaults.dashboard
    assert values["admin"]["port"] == 0 and defaults.admin_port is None  # 0: unset
    assert values["forwardedAllowIps"] == list(defaults.forwarded_allow_ips)


def test_admin_listener(render_chart: Callable[..., list[Doc]]) -> None:
    """admin.port: a container port "admin" bound on every address, a ClusterIP Service of its
    own even when the main one is a LoadBalancer, and metrics scraped there; the Ingress and
    the main Service keep to http, and the probes too."""
    docs = render_chart(ADMIN_PORT)
    deployment = m.hubplane_deployment(docs)
    c = m.container(deployment)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "admin": 9100}
    m.check_probes(c)
    service = m.check_service(docs, deployment)
    assert service["spec"]["type"] == "LoadBalancer"
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    admin = m.admin_service(docs, deployment)
    assert admin is not None
    assert admin["metadata"]["name"] == f"{FULLNAME}-admin"
    assert admin["spec"]["type"] == "ClusterIP"
    assert admin["spec"]["ports"][0]["port"] == 9100
    monitor = m.one(docs, "ServiceMonitor")
    m.check_service_monitor(docs, monitor)
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["admin"]
    match = monitor["spec"]["selector"]["matchLabels"]
    assert [
        s["metadata"]["name"]
        for s in m.by_kind(docs, "Service")
        if m.selects(match, s["metadata"]["labels"])
    ] == [admin["metadata"]["name"]]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9100"
    for rule in m.one(docs, "Ingress")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {
                "name": service["metadata"]["name"],
                "port": {"name": "http"},
            }

    off = render_chart(
        {"serviceMonitor": {"enabled": True}, "metrics": {"scrapeAnnotations": True}}
    )
    deployment = m.hubplane_deployment(off)
    assert [p["name"] for p in m.container(deployment)["ports"]] == ["http"]
    assert m.admin_service(off, deployment) is None
    assert len(m.by_kind(off, "Service")) == 1
    assert [e["port"] for e in m.one(off, "ServiceMonitor")["spec"]["endpoints"]] == ["http"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8000"


def test_admin_token_from_the_chart_secret(render_chart: Callable[..., list[Doc]]) -> None:
    docs = render_chart({"admin": {"token": {"value": "an-admin-token"}, "dashboard": True}})
    deployment = m.hubplane_deployment(docs)
    env = m.env_of(docs, m.container(deployment))
    ref = env["HUBPLANE_ADMIN_TOKEN"]["secretKeyRef"]
    assert ref == {"name": FULLNAME, "key": "admin-token"}
    assert m.secret_value(docs, ref["name"], ref["key"]) == "an-admin-token"
    assert env["HUBPLANE_DASHBOARD"] == "true"
    assert "checksum/secret" in deployment["spec"]["template"]["metadata"]["annotations"]
    assert not m.by_kind(render_chart(), "Secret"), "no secret value, no Secret"


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
        (["--set", "admin.port=70000"], "admin.port"),
        (["--set", "admin.port=-1"], "admin.port"),
        (["--set-string", "admin.port=9100"], "admin.port"),
        (["--set", "admin.dashboard=yes"], "admin.dashboard"),
        (["--set", "admin.tokn.value=x"], "tokn"),
        (["--set", "forwardedAllowIps[0]=ingress-nginx"], "forwardedAllowIps"),
        (["--set", "forwardedAllowIps=10.0.0.0/8"], "forwardedAllowIps"),
        (["--set", "limits.maxMessageSize=-1"], "limits.maxMessageSize"),
        (["--set", "limits.maxBufferSize=1000"], "limits.maxBufferSize"),
        (["--set", "limits.maxGroupsPerConnection=0"], "limits.maxGroupsPerConnection"),
        (["--set", "limits.maxStreamsPerConnection=0"], "limits.maxStreamsPerConnection"),
        (["--set", "limits.streamBufferCapacity=0"], "limits.streamBufferCapacity"),
        (["--set", "limits.maxPendingNegotiations=0"], "limits.maxPendingNegotiations"),
        (["--set", "limits.maxPendingNegotiations=1.5"], "limits.maxPendingNegotiations"),
        (["--set", "limits.maxGroups=10"], "maxGroups"),
        (["--set", "redis.queueLimit=0"], "redis.queueLimit"),
        (["--set", "redis.buffer=-1"], "redis.buffer"),
        (["--set", "redis.pubsub=fast"], "redis.pubsub"),
        (["--set", "redis.url=redis+clusters://h:1"], "url"),
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
        ({"admin": {"dashboard": True}}, "admin.dashboard needs admin.token"),
        (
            {"redis": {"internal": {"enabled": True}, "pubsub": "sharded"}},
            "redis.pubsub sharded needs a Redis Cluster",
        ),
        (
            {"redis": {"url": "redis://r:6379/0", "pubsub": "sharded"}},
            "redis.pubsub sharded needs a Redis Cluster URL",
        ),
        ({"admin": {"port": 8000}}, "admin.port must differ from containerPort"),
    ],
)
def test_inconsistent_values_fail_with_a_message(tools: Tools, values: Doc, message: str) -> None:
    result = helm_template(tools, values)
    assert result.returncode != 0, result.stdout[:500]
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("config", ["defaults", "everything", "no-sticky", "admin-port"])
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
    if config == "admin-port":
        assert f"port-forward service/{FULLNAME}-admin 9100:9100" in text
        assert "/metrics (Prometheus), the admin API and the dashboard" in text
    if config == "everything":
        assert "forwardedAllowIps is empty" in text


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
