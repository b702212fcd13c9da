"""``@authorize`` on hub classes and methods: roles, policies, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backplane import Hub, User, authorize
from backplane.protocol import CompletionMessage, InvocationMessage, StreamInvocationMessage

from .helpers import Client, make_handler


async def is_pro(user: User) -> bool:
    return user.claims.get("plan") == "pro"


@authorize
class Members(Hub):
    async def hello(self) -> str:
        return "hi"

    @authorize(roles=["admin", "owner"])
    async def kick(self, who: str) -> str:
        return f"kicked {who}"

    @authorize(policy=is_pro)
    async def export(self) -> str:
        return "data"

    @authorize(policy=lambda user: user.id.startswith("a"))
    async def a_only(self) -> None:
        return None

    @authorize(roles="admin")
    async def numbers(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


@authorize(roles=["staff"])
class StaffOnly(Members):
    pass


class Open(Hub):
    async def hello(self) -> str:
        return "hi"


async def test_hub_level_rules_refuse_at_connect() -> None:
    members = make_handler(Members)
    assert await members.refuses(None) == 401
    assert await members.refuses(User("ann")) is None
    staff = make_handler(StaffOnly)
    assert await staff.refuses(User("ann")) == 403
    assert await staff.refuses(User("ann", roles=["staff"])) is None
    # The subclass's rule did not leak into its base.
    assert await members.refuses(User("ann")) is None
    assert await make_handler(Open).refuses(None) is None


@pytest.mark.parametrize(
    ("user", "allowed"),
    [
        (User("bob"), {"Hello"}),
        (User("bob", roles=["owner"]), {"Hello", "Kick"}),
        (User("ann", claims={"plan": "pro"}), {"Hello", "Export", "AOnly"}),
    ],
)
async def test_method_rules(user: User, allowed: set[str]) -> None:
    client = Client(make_handler(Members), "c", user=user)
    await client.handshake()
    calls = {"Hello": [], "Kick": ["x"], "Export": [], "AOnly": []}
    for i, (target, args) in enumerate(calls.items()):
        await client.send(InvocationMessage(target, args, invocation_id=str(i)))
    replies = await client.wait_messages(len(calls))
    for (target, _), reply in zip(calls.items(), replies, strict=True):
        assert isinstance(reply, CompletionMessage)
        if target in allowed:
            assert reply.error is None, (target, reply.error)
        else:
            assert reply.error == f"Failed to invoke '{target}' because user is unauthorized"


async def test_a_refused_stream_completes_with_the_error() -> None:
    client = Client(make_handler(Members), "c", "messagepack", user=User("bob"))
    await client.handshake()
    await client.send(StreamInvocationMessage("s", "Numbers", [3]))
    (reply,) = await client.wait_messages(1)
    assert isinstance(reply, CompletionMessage)
    assert reply.error == "Failed to invoke 'Numbers' because user is unauthorized"
    admin = Client(make_handler(Members), "d", "messagepack", user=User("al", roles=["admin"]))
    await admin.handshake()
    await admin.send(StreamInvocationMessage("s", "Numbers", [2]))
    got = await admin.wait_messages(3)
    assert isinstance(got[-1], CompletionMessage) and got[-1].error is None


class FailingPolicy(Hub):
    @authorize(policy=lambda user: user.claims["plan"] == "pro")  # KeyError: no such claim
    async def export(self) -> str:
        return "data"


async def test_a_failing_policy_refuses_instead_of_hanging() -> None:
    client = Client(make_handler(FailingPolicy), "c", user=User("ann"))
    await client.handshake()
    await client.send(InvocationMessage("Export", [], "1"))
    (reply,) = await client.wait_messages(1)
    assert isinstance(reply, CompletionMessage)
    assert reply.error == "Failed to invoke 'Export' because user is unauthorized"
