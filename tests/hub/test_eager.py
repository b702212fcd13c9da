"""Invocations started in the receive path's turn (backplane/eager.py, invocations.py):
a method that ends without waiting answers before the receive returns; one that waits goes
on in the connection's runner task, in order, and the receive path never waits for it."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from backplane import Hub, HubException, invocations
from backplane.eager import Resumed, first_step
from backplane.invocations import MAX_QUEUED_INVOCATIONS
from backplane.protocol import CompletionMessage, InvocationMessage

from .helpers import Client, make_handler

events: list[Any] = []
var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


class EagerHub(Hub):
    async def echo(self, value: Any) -> Any:
        events.append(("task", asyncio.current_task()))
        return value

    async def slow(self, tag: str, delay: float) -> str:
        events.append(("start", tag))
        await asyncio.sleep(delay)
        events.append(("end", tag))
        return tag

    async def fail(self) -> None:
        raise HubException("nope")

    async def crash(self) -> None:
        raise ValueError("secret")

    async def cancelled(self) -> None:
        raise asyncio.CancelledError

    async def ask_caller(self, question: str) -> Any:
        return await self.clients.caller.invoke("Answer", question)

    async def timed(self, seconds: float) -> str:
        try:
            async with asyncio.timeout(seconds):
                await asyncio.sleep(10)
        except TimeoutError:
            return "timed out"
        return "slept"

    async def set_var(self, value: str) -> str:
        previous = var.get()
        var.set(value)
        return previous


async def connect(cid: str = "c1", **options: Any) -> Client:
    client = Client(make_handler(EagerHub, **options), cid)
    await client.handshake()
    return client


def completions(client: Client) -> list[CompletionMessage]:
    return [m for m in client.messages() if isinstance(m, CompletionMessage)]


def setup_function() -> None:
    events.clear()


async def test_a_method_that_does_not_wait_answers_before_receive_returns() -> None:
    c = await connect()
    await c.send(InvocationMessage("Echo", ["hi"], "1"))
    # No await in between: the Completion is queued already.
    [reply] = completions(c)
    assert (reply.invocation_id, reply.result) == ("1", "hi")
    await c.send(InvocationMessage("Echo", [2], "2"))
    [reply] = completions(c)
    assert (reply.invocation_id, reply.result) == ("2", 2)
    tasks = [t for kind, t in events if kind == "task"]
    # It ran as the connection's runner task, not as the task that fed the frame.
    assert tasks[0] is tasks[1] is not asyncio.current_task()
    assert tasks[0] is not None and not tasks[0].done()


async def test_a_method_that_waits_goes_on_in_the_runner_and_answers_later() -> None:
    c = await connect()
    await c.send(InvocationMessage("Slow", ["a", 0.02], "1"))
    assert events == [("start", "a")]  # started in the receive path's turn
    assert completions(c) == []
    got = await c.wait_messages(1)
    assert [(m.invocation_id, m.result) for m in got] == [("1", "a")]  # type: ignore[attr-defined]
    # And the next one runs eagerly again.
    await c.send(InvocationMessage("Echo", ["x"], "2"))
    assert [m.invocation_id for m in completions(c)] == ["2"]


async def test_errors_answer_at_once_and_the_connection_goes_on() -> None:
    c = await connect()
    await c.send(InvocationMessage("Fail", [], "1"))
    await c.send(InvocationMessage("Crash", [], "2"))
    await c.send(InvocationMessage("Cancelled", [], "3"))  # a CancelledError from the method
    await c.send(InvocationMessage("Echo", ["after"], "4"))
    replies = completions(c)
    assert [r.invocation_id for r in replies] == ["1", "2", "4"]
    assert replies[0].error is not None and "nope" in replies[0].error
    assert replies[1].error is not None and "secret" not in replies[1].error
    assert replies[2].result == "after"
    assert not c.conn.closing


async def test_a_second_invocation_waits_behind_one_that_waits() -> None:
    c = await connect()
    await c.send(InvocationMessage("Slow", ["a", 0.03], "1"))
    await c.send(InvocationMessage("Echo", ["b"], "2"))
    await c.send(InvocationMessage("Slow", ["c", 0.0], "3"))
    assert completions(c) == []  # Echo did not overtake the waiting Slow
    got = await c.wait_messages(3)
    assert [m.invocation_id for m in got] == ["1", "2", "3"]  # type: ignore[attr-defined]
    assert [e for e in events if e[0] != "task"] == [
        ("start", "a"),
        ("end", "a"),
        ("start", "c"),
        ("end", "c"),
    ]


async def test_a_client_result_from_its_own_caller_does_not_deadlock() -> None:
    c = await connect()
    await c.send(InvocationMessage("AskCaller", ["why?"], "1"))
    [question] = [m for m in c.messages() if isinstance(m, InvocationMessage)]
    assert question.target == "Answer" and question.arguments == ["why?"]
    assert question.invocation_id is not None
    # The receive path read on: the answer reaches the waiting method.
    await c.send(CompletionMessage.with_result(question.invocation_id, 42))
    got = await c.wait_messages(1)
    assert [(m.invocation_id, m.result) for m in got] == [("1", 42)]  # type: ignore[attr-defined]


async def test_asyncio_timeout_in_an_eager_method_cancels_the_method_only() -> None:
    c = await connect()
    await c.send(InvocationMessage("Timed", [0.01], "1"))
    await c.send(InvocationMessage("Timed", [0], "2"))  # expires before the runner goes on
    got = await c.wait_messages(2)
    assert [(m.invocation_id, m.result) for m in got] == [  # type: ignore[attr-defined]
        ("1", "timed out"),
        ("2", "timed out"),
    ]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await c.send(InvocationMessage("Echo", ["still here"], "3"))
    assert [r.result for r in completions(c)] == ["still here"]


async def test_context_variables_stay_in_the_connection_runner() -> None:
    c = await connect()
    await c.send(InvocationMessage("SetVar", ["one"], "1"))
    assert var.get() == "unset"  # the receive path's context is untouched
    await c.send(InvocationMessage("SetVar", ["two"], "2"))
    # Invocations of one connection share its runner's context, as they did in its task.
    assert [r.result for r in completions(c)] == ["unset", "one"]
    other = await connect("c2")
    await other.send(InvocationMessage("SetVar", ["three"], "1"))
    assert [r.result for r in completions(other)] == ["unset"]


async def test_settle_waits_for_a_method_the_eager_step_handed_over() -> None:
    c = await connect()
    await c.send(InvocationMessage("Slow", ["a", 0.02], "1"))
    await asyncio.wait_for(c.conn.settle(), 2)
    assert [m.invocation_id for m in completions(c)] == ["1"]
    await asyncio.wait_for(c.conn.settle(), 2)  # idle: returns at once


async def test_the_queue_bound_still_stops_the_reader_behind_a_waiting_method() -> None:
    c = await connect()
    await c.send(InvocationMessage("Slow", ["first", 0.05], "0"))
    # The method waits in the runner: the next ones queue, up to the bound.
    for i in range(1, MAX_QUEUED_INVOCATIONS):
        await c.send(InvocationMessage("Echo", [i], str(i)))
    blocked = asyncio.ensure_future(c.send(InvocationMessage("Echo", ["last"], "last")))
    await asyncio.sleep(0)
    assert not blocked.done()  # the reader waits for room
    await asyncio.wait_for(blocked, 2)
    got = await c.wait_messages(MAX_QUEUED_INVOCATIONS + 1)
    ids = [m.invocation_id for m in got]  # type: ignore[attr-defined]
    assert ids == [str(i) for i in range(MAX_QUEUED_INVOCATIONS)] + ["last"]


async def test_the_runner_ends_with_the_connection() -> None:
    c = await connect()
    await c.send(InvocationMessage("Echo", [1], "1"))
    [(_, runner)] = events
    assert not runner.done()
    await c.conn.transport_closed()
    await asyncio.wait_for(asyncio.shield(runner), 1)
    assert runner.done() and not runner.cancelled()


async def test_first_step_and_resumed_drive_a_coroutine_as_the_given_task() -> None:
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    gate: asyncio.Future[int] = loop.create_future()
    seen: list[Any] = []

    async def method() -> int:
        seen.append(asyncio.current_task())
        value = await gate
        seen.append(asyncio.current_task())
        return value * 2

    async def park(until: asyncio.Future[None]) -> Any:
        await until
        return await Resumed(*handed)

    until: asyncio.Future[None] = loop.create_future()
    runner = loop.create_task(park(until))
    await asyncio.sleep(0)  # parked
    coro = method()
    done, yielded = first_step(loop, coro, runner, contextvars.copy_context())
    handed = (coro, yielded)
    assert not done and yielded is gate
    assert asyncio.current_task() is me  # put back
    until.set_result(None)
    gate.set_result(21)
    assert await runner == 42
    assert seen == [runner, runner]


async def test_an_idle_runner_ends_and_the_next_call_makes_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(invocations, "RUNNER_IDLE_SECONDS", 0.01)
    c = await connect()
    await c.send(InvocationMessage("Echo", [1], "1"))
    [(_, first)] = events
    await asyncio.wait_for(asyncio.shield(first), 1)  # parked, then ended
    assert not c.conn.closing
    await c.send(InvocationMessage("Echo", [2], "2"))  # eager again, as a new runner
    assert [r.result for r in completions(c)] == [1, 2]
    second = events[-1][1]
    assert second is not first and not second.done()
    # A method that waits keeps its runner past the idle time.
    await c.send(InvocationMessage("Slow", ["a", 0.05], "3"))
    got = await c.wait_messages(1)
    assert [m.invocation_id for m in got] == ["3"]  # type: ignore[attr-defined]


class SelfCancelHub(Hub):
    async def cancel_me(self, wait: bool) -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        if wait:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                return "cancelled"
        return "not cancelled yet"

    async def echo(self, value: Any) -> Any:
        return value


async def test_a_method_that_cancels_its_own_task_does_not_break_the_receive_path() -> None:
    c = Client(make_handler(SelfCancelHub), "c1")
    await c.handshake()
    await c.send(InvocationMessage("CancelMe", [True], "1"))
    got = await c.wait_messages(1)
    assert [(m.invocation_id, m.result) for m in got] == [("1", "cancelled")]  # type: ignore[attr-defined]
    await c.send(InvocationMessage("CancelMe", [False], "2"))
    await asyncio.sleep(0.01)  # its runner ends cancelled; a new one serves the next call
    await c.send(InvocationMessage("Echo", ["after"], "3"))
    got = await c.wait_messages(2)
    assert [m.invocation_id for m in got] == ["2", "3"]  # type: ignore[attr-defined]
    assert not c.conn.closing
