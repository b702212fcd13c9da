"""Typed hubs, filters, JWT bearer tokens and ``@authorize`` with the official JS client."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

pytestmark = pytest.mark.e2e

SECRET = "e2e-secret-key-that-is-long-enough-for-hs256"
HUBS = {
    "/hubs/typed": "tests.e2e.feature_hubs:TypedHub",
    "/hubs/secure": "tests.e2e.feature_hubs:SecureHub",
    "/hubs/staff": "tests.e2e.feature_hubs:StaffHub",
}
ARGS = [
    "--jwt-secret",
    SECRET,
    "--jwt-issuer",
    "hubplane-tests",
    "--filter",
    "tests.e2e.feature_hubs:AuditFilter",
    "--log-level",
    "warning",
]


def token(
    sub: str, *, roles: list[str] | None = None, expires_in: float = 300, **extra: Any
) -> str:
    claims: dict[str, Any] = {
        "sub": sub,
        "iss": "hubplane-tests",
        "exp": int(time.time() + expires_in),
        **extra,
    }
    if roles:
        claims["roles"] = roles
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def server(module_hubplane_server: Any) -> Any:
    return module_hubplane_server(HUBS, extra_args=ARGS, ready_path="/hubs/typed")


# Every transport, with each protocol it carries (SSE is text only).
PAIRS = [
    ("WebSockets", "json"),
    ("WebSockets", "messagepack"),
    ("ServerSentEvents", "json"),
    ("LongPolling", "json"),
    ("LongPolling", "messagepack"),
]


@pytest.mark.parametrize(("transport", "protocol"), PAIRS)
def test_typed_hub_and_filters(
    server: Any, node_client: Any, transport: str, protocol: str
) -> None:
    result = node_client.run(
        """
        const a = makeConnection({ accessToken: params.ann });
        const b = makeConnection({ accessToken: params.bob });
        const got = deferred();
        b.on("ReceiveMessage", (user, text) => got.resolve([user, text]));
        a.on("GetCount", () => 41);
        a.on("Nothing", () => {});
        await a.start(); await b.start();
        await a.invoke("SendMessage", "hello");
        log("received", await within(got.promise, 5000, "ReceiveMessage"));
        log("count", await a.invoke("AskCount"));
        try { log("nothing", await a.invoke("AskNothing")); }
        catch (e) { log("nothing", errorText(e)); }
        log("trail", await a.invoke("Trail", 1));
        try { await a.invoke("Trail", -1); log("negative", "accepted"); }
        catch (e) { log("negative", errorText(e)); }
        try { await b.invoke("AskCount"); log("no_handler", "answered"); }
        catch (e) { log("no_handler", errorText(e)); }
        """,
        url=server.hub_url("/hubs/typed"),
        transport=transport,
        protocol=protocol,
        params={"ann": token("ann"), "bob": token("bob")},
    )
    assert result.value("received") == ["ann", "hello"]
    assert result.value("count") == 42
    # A handler that returns nothing is not an answer, for the official client either.
    assert "Client didn't provide a result" in result.value("nothing")
    # Global filter first, then the hub's; four calls so far.
    assert result.value("trail") == ["global", "hub"] * 4
    assert "negative numbers are not allowed" in result.value("negative")
    # b has no GetCount handler: the client says so, and the hub method fails with it.
    assert "Client didn't provide a result" in result.value("no_handler")


@pytest.mark.parametrize(("transport", "protocol"), PAIRS)
def test_jwt_and_authorize(server: Any, node_client: Any, transport: str, protocol: str) -> None:
    result = node_client.run(
        """
        const tryStart = async (opts) => {
          const c = makeConnection(opts);
          try { await c.start(); return { ok: c }; } catch (e) { return { err: errorText(e) }; }
        };
        const admin = await tryStart({ accessToken: params.admin });
        log("whoami", await admin.ok.invoke("Whoami"));
        log("admin", await admin.ok.invoke("AdminOnly"));
        const user = await tryStart({ accessToken: params.user });
        try { await user.ok.invoke("AdminOnly"); log("denied", "no"); }
        catch (e) { log("denied", errorText(e)); }
        log("anonymous", (await tryStart({})).err || "connected");
        log("bad", (await tryStart({ accessToken: params.bad })).err || "connected");
        log("expired", (await tryStart({ accessToken: params.expired })).err || "connected");
        log("forbidden", (await tryStart({ path: "/hubs/staff", accessToken: params.user })).err || "connected");
        const staff = await tryStart({ path: "/hubs/staff", accessToken: params.staff });
        log("staff", await staff.ok.invoke("Ping"));
        """,
        url=server.hub_url("/hubs/secure"),
        transport=transport,
        protocol=protocol,
        params={
            "admin": token("root", roles=["admin"], name="Root"),
            "user": token("joe", roles=["user"]),
            "staff": token("sam", roles=["staff"]),
            "bad": token("eve") + "x",
            "expired": token("old", expires_in=-60),
        },
    )
    assert result.value("whoami") == {"id": "root", "roles": ["admin"], "name": "Root"}
    assert result.value("admin") == "welcome, admin"
    assert "Failed to invoke 'AdminOnly' because user is unauthorized" in result.value("denied")
    for refused, status in (("anonymous", "401"), ("bad", "401"), ("expired", "401")):
        assert status in result.value(refused), (refused, result.value(refused))
    assert "403" in result.value("forbidden")
    assert result.value("staff") == "pong"
