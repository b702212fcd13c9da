"""The kustomize manifests in deploy/: the base and the dev overlay build, validate strictly and
keep the same probe, drain and security properties as the chart."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from server.settings import Settings, build_settings

from . import manifests as m
from .conftest import DEPLOY_DIR, Doc, parse

BASE = DEPLOY_DIR / "base"
DEV = DEPLOY_DIR / "overlays" / "dev"
# Set in the base at the server's defaults.
LIMITS = (
    "max_message_size",
    "max_buffer_size",
    "max_groups_per_connection",
    "max_streams_per_connection",
    "stream_buffer_capacity",
    "max_pending_negotiations",
    "redis_queue_limit",
    "redis_buffer",
)


@pytest.mark.parametrize("directory", [BASE, DEV], ids=["base", "dev"])
def test_builds_and_validates(
    directory: Path,
    render_kustomize: Callable[[Path], list[Doc]],
    validate: Callable[[Sequence[Doc]], None],
) -> None:
    docs = render_kustomize(directory)
    validate(docs)
    deployment = m.hubplane_deployment(docs)
    m.check_probes(m.container(deployment))
    m.check_security(deployment)
    m.check_service(docs, deployment)
    m.check_pdb(docs, deployment)
    sleep, drain, grace = m.check_shutdown(docs, deployment)
    assert (sleep, drain, grace) == (5, 30, 45)
    env = m.env_of(docs, m.container(deployment))
    assert env["HUBPLANE_HOST"] == "0.0.0.0"
    assert env["HUBPLANE_PORT"] == "8000"
    assert env["HUBPLANE_DURABLE_RESUME"] == "false"  # off by default (docs/operations.md)
    token = env["HUBPLANE_TOKEN_SECRET"]["secretKeyRef"]
    assert token["optional"] is True, "no-sticky mode only when the Secret exists"
    settings = build_settings(
        None, {k: v for k, v in env.items() if isinstance(v, str)} | {"REDIS_URL": "redis://r"}
    )
    defaults = Settings()
    for name in LIMITS:
        assert "HUBPLANE_" + name.upper() in env, name
        assert getattr(settings, name) == getattr(defaults, name), name
    assert settings.forwarded_allow_ips == ()


def test_admin_port(render_kustomize: Callable[[Path], list[Doc]]) -> None:
    """/metrics and the admin API on the container port "admin", which only a ClusterIP Service
    of its own carries; the admin token from an optional Secret."""
    docs = render_kustomize(BASE)
    deployment = m.hubplane_deployment(docs)
    c = m.container(deployment)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = m.env_of(docs, c)
    assert env["HUBPLANE_ADMIN_PORT"] == str(ports["admin"]) == "9100"
    assert env["HUBPLANE_ADMIN_HOST"] == "0.0.0.0"
    assert env["HUBPLANE_ADMIN_PORT"] != env["HUBPLANE_PORT"]
    m.check_probes(c)
    service = m.check_service(docs, deployment)
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    admin = m.admin_service(docs, deployment)
    assert admin is not None and admin["metadata"]["name"] == "hubplane-admin"
    assert admin["spec"]["type"] == "ClusterIP"
    token = env["HUBPLANE_ADMIN_TOKEN"]["secretKeyRef"]
    assert token == {"name": "hubplane-admin", "key": "admin-token", "optional": True}
    assert "HUBPLANE_DASHBOARD" not in env, "it needs the token, which may be missing"


def test_base_reads_redis_from_the_documented_secret(
    render_kustomize: Callable[[Path], list[Doc]], validate: Callable[[Sequence[Doc]], None]
) -> None:
    docs = render_kustomize(BASE)
    deployment = m.hubplane_deployment(docs)
    ref = m.check_redis_url_from_secret(docs, deployment, existing={"hubplane-redis"})
    example = parse((BASE / "redis-secret.example.yaml").read_text())
    validate(example)
    (secret,) = example
    assert ref == {"name": secret["metadata"]["name"], "key": "redis-url"}
    assert ref["key"] in secret["stringData"]
    assert deployment["spec"]["replicas"] >= 2
    assert m.env_of(docs, m.container(deployment))["HUBPLANE_LOG_LEVEL"] == "info"
    assert m.env_of(docs, m.container(deployment))["HUBPLANE_LOG_FORMAT"] == "json"


def test_dev_overlay(render_kustomize: Callable[[Path], list[Doc]]) -> None:
    docs = render_kustomize(DEV)
    deployment = m.hubplane_deployment(docs)
    assert deployment["spec"]["replicas"] == 1
    env = m.env_of(docs, m.container(deployment))
    assert env["HUBPLANE_LOG_LEVEL"] == "debug"
    assert env["HUBPLANE_LOG_FORMAT"] == "text"
    namespace = m.one(docs, "Namespace")["metadata"]["name"]
    assert all(
        d["metadata"].get("namespace") == namespace for d in docs if d["kind"] != "Namespace"
    )

    ref = m.check_redis_url_from_secret(docs, deployment)
    url = m.secret_value(docs, ref["name"], ref["key"])
    redis = m.one(docs, "Deployment", "hubplane-redis")
    redis_service = m.one(docs, "Service", "hubplane-redis")
    assert url == f"redis://{redis_service['metadata']['name']}:6379/0"
    assert redis["spec"]["replicas"] == 1
    assert m.selects(
        redis_service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"]
    )
    assert redis_service["spec"]["ports"][0]["port"] == 6379
