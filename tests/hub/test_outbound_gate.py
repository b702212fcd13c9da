"""The outbound buffer's gate (``--durable-resume``): writes wait until released, in order."""

from __future__ import annotations

import asyncio

from backplane.outbound import OutboundBuffer


async def test_held_writes_leave_in_order_up_to_the_mark_released() -> None:
    out = OutboundBuffer(1 << 20)
    out.write(b"before ")  # queued before the gate: may go
    touched: list[int] = []
    out.hold(lambda: touched.append(out.mark))
    out.write(b"a")
    out.write(b"b")
    mark = out.mark
    out.write(b"c")
    assert touched == [2, 3, 4] and out.held == 3  # marks count what was queued before
    assert out.take() == b"before "
    assert out.take() == b""
    out.release(mark)
    assert out.take() == b"ab" and out.size == 1
    out.release(out.mark)
    assert out.take() == b"c" and out.held == 0


async def test_a_sink_gets_released_bytes_at_the_end_of_the_turn() -> None:
    out = OutboundBuffer(1 << 20)
    sent: list[bytes] = []
    out.sink = sent.append
    out.hold(lambda: None)
    out.write(b"x")
    await asyncio.sleep(0)
    assert sent == []
    out.release(out.mark)
    out.write(b"y")  # held: after the mark
    await asyncio.sleep(0)
    assert sent == [b"x"]
    out.open()  # no gate any more: everything may go
    await asyncio.sleep(0)
    assert sent == [b"x", b"y"]


async def test_a_closed_buffer_waits_for_its_held_bytes_and_discard_drops_them() -> None:
    out = OutboundBuffer(1 << 20)
    out.hold(lambda: None)
    out.write(b"last words")
    out.close()
    ready = asyncio.ensure_future(out.ready())
    await asyncio.sleep(0.01)
    assert not ready.done()  # closed, but its bytes are not recorded yet
    out.release(out.mark)
    await asyncio.wait_for(ready, 1)
    assert out.take() == b"last words"
    await asyncio.wait_for(out.ready(), 1)  # closed and empty
    other = OutboundBuffer(1 << 20)
    other.hold(lambda: None)
    other.write(b"stale")
    other.discard()
    other.release(other.mark)
    assert other.take() == b"" and other.size == 0
    other.write(b"new")
    other.release(other.mark)
    assert other.take() == b"new"


async def test_the_limit_counts_held_bytes() -> None:
    out = OutboundBuffer(4)
    out.hold(lambda: None)
    assert out.write(b"1234")
    assert not out.write(b"5")  # over the limit: the owner drops the slow connection
