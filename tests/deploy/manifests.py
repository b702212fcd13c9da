"""Checks shared by the Helm chart and the kustomize tests: what any hubplane manifest must hold."""

from __future__ import annotations

import base64
import re
from collections.abc import Collection, Sequence
from typing import Any

Doc = dict[str, Any]

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"


def by_kind(docs: Sequence[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Sequence[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def hubplane_deployment(docs: Sequence[Doc]) -> Doc:
    """The Deployment whose container is named hubplane (not the internal Redis)."""
    found = [
        d
        for d in by_kind(docs, "Deployment")
        if any(c["name"] == "hubplane" for c in d["spec"]["template"]["spec"]["containers"])
    ]
    assert len(found) == 1, f"expected one hubplane Deployment, found {len(found)}"
    return found[0]


def container(deployment: Doc, name: str = "hubplane") -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_of(docs: Sequence[Doc], c: Doc) -> dict[str, Any]:
    """The container's environment: ``envFrom`` ConfigMaps of the render first (others are
    made outside it), then ``env`` (whose entries are values, or the ``valueFrom`` dict)."""
    env: dict[str, Any] = {}
    config_maps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    for source in c.get("envFrom", []):
        cm = config_maps.get(source.get("configMapRef", {}).get("name"))
        if cm is not None:
            env.update({source.get("prefix", "") + k: v for k, v in cm.get("data", {}).items()})
    for item in c.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else item.get("valueFrom")
    return env


def secret_value(docs: Sequence[Doc], name: str, key: str) -> str:
    """A key of a Secret in the render, decoded."""
    secret = one(docs, "Secret", name)
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    return base64.b64decode(secret["data"][key]).decode()


def check_probes(c: Doc) -> None:
    """Liveness on /healthz, readiness on /readyz, on the container's http port."""
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert "http" in ports, c["ports"]

    def target(probe: Doc) -> tuple[str, int]:
        get = probe["httpGet"]
        port = get["port"]
        return get["path"], ports[port] if isinstance(port, str) else port

    assert target(c["livenessProbe"]) == (HEALTH_PATH, ports["http"])
    assert target(c["readinessProbe"]) == (READY_PATH, ports["http"])
    if "startupProbe" in c:
        assert target(c["startupProbe"]) == (HEALTH_PATH, ports["http"])
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if "HUBPLANE_PORT" in env:
        assert int(env["HUBPLANE_PORT"]) == ports["http"]


def pre_stop_sleep(c: Doc) -> int:
    """Seconds the preStop hook sleeps (0 without one)."""
    pre_stop = c.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


def check_shutdown(docs: Sequence[Doc], deployment: Doc) -> tuple[int, float, int]:
    """terminationGracePeriodSeconds outlasts the preStop sleep plus the drain timeout.

    Returns (preStop sleep, drain timeout, grace period)."""
    c = container(deployment)
    env = env_of(docs, c)
    assert "HUBPLANE_DRAIN_TIMEOUT" in env, "the drain timeout must be set explicitly"
    drain = float(env["HUBPLANE_DRAIN_TIMEOUT"])
    sleep = pre_stop_sleep(c)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > sleep + drain, (grace, sleep, drain)
    return sleep, drain, grace


def check_security(deployment: Doc) -> None:
    """Non-root uid 10001, read-only root, no privilege escalation, no capabilities,
    RuntimeDefault seccomp, a writable /tmp from an emptyDir."""
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    sc = c["securityContext"]
    pod_sc = pod.get("securityContext", {})

    def setting(name: str) -> Any:
        return sc.get(name, pod_sc.get(name))

    assert setting("runAsNonRoot") is True
    assert setting("runAsUser") == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    assert setting("seccompProfile") == {"type": "RuntimeDefault"}
    assert pod.get("automountServiceAccountToken") is False
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "/tmp" in mounts, c["volumeMounts"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert c["resources"]["requests"], "resource requests are needed (and by the HPA)"
    assert c["resources"]["limits"]["memory"]


def check_redis_url_from_secret(
    docs: Sequence[Doc], deployment: Doc, existing: Collection[str] = ()
) -> dict[str, str]:
    """REDIS_URL comes from a secretKeyRef to a Secret in the render (or one named in
    ``existing``, made outside). Returns the secretKeyRef."""
    env = {e["name"]: e for e in container(deployment).get("env", [])}
    assert "REDIS_URL" in env, "REDIS_URL is not set"
    assert "value" not in env["REDIS_URL"], "REDIS_URL must not be a plain value"
    ref = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert not ref.get("optional", False), "a missing Redis Secret must stop the pod"
    if ref["name"] not in existing:
        url = secret_value(docs, ref["name"], ref["key"])
        assert url.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://"))
    return dict(ref)


def check_service(docs: Sequence[Doc], deployment: Doc) -> Doc:
    """The Service selects the hubplane pods, and only them, on the http port; the container's
    admin port, when it has one, is only on a ClusterIP Service of its own (never on the one
    clients reach). Returns the http Service."""
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    services = [s for s in by_kind(docs, "Service") if selects(s["spec"]["selector"], pod_labels)]
    others = [d for d in by_kind(docs, "Deployment") if d is not deployment]
    for service in services:
        for other in others:
            assert not selects(
                service["spec"]["selector"], other["spec"]["template"]["metadata"]["labels"]
            )
    http = [s for s in services if any(p["name"] == "http" for p in s["spec"]["ports"])]
    assert len(http) == 1, [s["metadata"]["name"] for s in services]
    service = http[0]
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http" and port["targetPort"] == "http"
    admin = [s for s in services if s is not service]
    container_ports = {p["name"] for p in container(deployment)["ports"]}
    assert len(admin) == ("admin" in container_ports), [s["metadata"]["name"] for s in admin]
    for admin_service in admin:
        assert admin_service["spec"].get("type", "ClusterIP") == "ClusterIP", admin_service
        (admin_port,) = admin_service["spec"]["ports"]
        assert admin_port["name"] == "admin" and admin_port["targetPort"] == "admin"
    return service


def admin_service(docs: Sequence[Doc], deployment: Doc) -> Doc | None:
    """The Service of the container's admin port (see check_service), or None."""
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    found = [
        s
        for s in by_kind(docs, "Service")
        if selects(s["spec"]["selector"], pod_labels)
        and [p["name"] for p in s["spec"]["ports"]] == ["admin"]
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def check_pdb(docs: Sequence[Doc], deployment: Doc) -> Doc:
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert selects(
        pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    return pdb


def check_service_monitor(docs: Sequence[Doc], monitor: Doc) -> None:
    """A ServiceMonitor's shape (no schema is bundled for it): selects exactly the hubplane
    Service and scrapes /metrics on its named port."""
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    assert set(monitor) <= {"apiVersion", "kind", "metadata", "spec"}
    assert monitor["metadata"]["name"]
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, set(spec)
    match = spec["selector"]["matchLabels"]
    chosen = [s for s in by_kind(docs, "Service") if selects(match, s["metadata"]["labels"])]
    assert len(chosen) == 1, [s["metadata"]["name"] for s in chosen]
    port_names = {p["name"] for p in chosen[0]["spec"]["ports"]}
    assert spec["endpoints"], "no endpoints"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, endpoint
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        for duration in ("interval", "scrapeTimeout"):
            if duration in endpoint:
                assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", endpoint[duration]), endpoint
    if "namespaceSelector" in spec:
        assert isinstance(spec["namespaceSelector"]["matchNames"], list)
