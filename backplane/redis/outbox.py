"""The writer's queue and its policy, sans-I/O: what waits, what is dropped, what goes next.

Commands are queued in the order they are asked for and leave in that order (a presence
query sees the writes queued before it). While Redis is unreachable:

- PUBLISH is kept up to ``buffer_limit`` (the oldest plain publish is dropped beyond it,
  and counted) and goes out after reconnecting;
- STATE writes are dropped (their owners rewrite their state on reconnect);
- QUERY (and a counted publish) fails at once with :class:`BackplaneUnavailable`;
- KEEP state writes wait like publishes, within the same ``buffer_limit`` (beyond it the
  oldest plain publish goes first, then the oldest KEEP write; counted).

While Redis is reachable the queue is bounded too, by ``queue_limit`` commands: a Redis slower
than the node's publishing (or a burst no round trip can keep up with) must not grow memory
until the process dies. The policy is the outage buffer's, oldest dropped and counted
(``BusStats.overflowed``), not back-pressure: ``publish`` and ``command`` are called from
paths that must not wait (fan-out inside hub methods, the subscriber's message handlers,
timers), receivers see the loss as a gap in the publisher's numbers, and the newest
messages are the ones worth keeping. A plain publish goes first, then a state write; a
command somebody waits for is never dropped: a new query past the bound fails at once. The
presence rewrite after a reconnect is not limited (the writer lifts the bound while its
reconnect hooks run): it is as large as the node's own state, not as its traffic.

After a reconnect the publishes are held for a while (``hold_until``) so the other nodes'
subscribers are back before they go out; everything else goes at once.

No sockets and no awaiting here: the writer (``writer.py``) reports the connection's state,
takes batches and puts back what it could not send. A command's future is an opaque value
to the outbox (anything with ``done``, ``set_result`` and ``set_exception``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import HubplaneError
from ..stats import BATCH_BUCKETS, ROUND_TRIP_BUCKETS, Buckets, Observer
from .keys import HISTORY_PUBLISH, PUBLISH_MANY, script_sha

# Commands per pipeline round trip; larger bursts take several.
MAX_BATCH = 2048  # default of Outbox.max_batch
# Commands queued at most while Redis is reachable (default of Outbox.queue_limit): fifty
# full batches, far more than a healthy Redis ever lets pile up.
QUEUE_LIMIT = 100_000

# Kinds of queued command.
PUBLISH = 0  # buffered through an outage
STATE = 1  # dropped while disconnected (rewritten on reconnect)
QUERY = 2  # fails while disconnected
KEEP = 3  # a state write kept through an outage


class BackplaneUnavailable(HubplaneError):
    """Redis cannot be reached right now."""


@dataclass(slots=True)
class BusStats:
    """Counters of one node's Redis traffic (for readiness and metrics)."""

    published: int = 0
    received: int = 0
    buffered: int = 0
    dropped: int = 0
    #: Commands dropped because the queue was at ``queue_limit`` while Redis was reachable.
    overflowed: int = 0
    #: SUBSCRIBEs sent again because Redis did not confirm them in time.
    resubscribes: int = 0
    reconnects: int = 0
    batches: int = 0
    errors: int = 0
    #: Redis Cluster: commands sent again to another master (MOVED, ASK).
    redirections: int = 0
    #: Redis Cluster: publishes sent again because the master that took them failed.
    replayed: int = 0
    #: Redis Cluster: channels subscribed again on another master (a failover, a reshard).
    channel_moves: int = 0
    #: Commands per pipelined round trip, and how long each round trip took (seconds).
    batch_sizes: Observer = field(default_factory=lambda: Buckets(BATCH_BUCKETS))
    round_trips: Observer = field(default_factory=lambda: Buckets(ROUND_TRIP_BUCKETS))


class Waiter(Protocol):
    """Who waits for a command's reply (an ``asyncio.Future`` in the writer)."""

    def done(self) -> bool:
        """True once a result or an exception is set."""
        ...

    def set_result(self, result: Any, /) -> None:
        """Hand over the reply."""
        ...

    def set_exception(self, exception: BaseException, /) -> None:
        """Hand over a failure."""
        ...


class Command:
    """One queued command: its kind, its arguments, and who waits for its reply (if anyone)."""

    __slots__ = ("kind", "args", "future")

    def __init__(self, kind: int, args: tuple[Any, ...], future: Waiter | None) -> None:
        self.kind = kind
        self.args = args
        self.future = future


#: What :meth:`Outbox.take` hands the writer: the commands taken; the same commands in
#: groups, one reply each; and one command to send per group.
Batch = tuple[list[Command], list[list[Command]], list[tuple[Any, ...]]]


class Outbox:
    """The queue of commands for Redis and the policy deciding their fate (sans-I/O)."""

    __slots__ = (
        "_queue",
        "_wake",
        "stats",
        "buffer_limit",
        "queue_limit",
        "max_batch",
        "publish_script",
        "publish_sha",
        "history_sha",
        "writer_up",
        "reader_up",
        "last_error",
        "hold_until",
    )

    def __init__(
        self,
        stats: BusStats,
        wake: Callable[[], None],
        *,
        buffer_limit: int = 10000,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self._queue: deque[Command] = deque()
        # Called when there is something new for the writer to send.
        self._wake = wake
        self.stats = stats
        #: Publishes kept through an outage (the oldest are dropped beyond it).
        self.buffer_limit = buffer_limit
        #: Commands queued at most while Redis is reachable (the oldest droppable goes beyond).
        self.queue_limit = queue_limit
        #: Commands per pipelined round trip (1 turns pipelining off, for comparison).
        self.max_batch = MAX_BATCH
        #: Send runs of publishes as one Lua call (False: one PUBLISH command each).
        self.publish_script = True
        self.publish_sha = script_sha(PUBLISH_MANY)
        self.history_sha = script_sha(HISTORY_PUBLISH)
        #: The connections' state, as the writer and the subscriber last reported it.
        self.writer_up = False
        self.reader_up = False
        self.last_error: str | None = None
        #: Publishes wait until this time (the writer's clock) after a reconnect.
        self.hold_until = 0.0

    @property
    def queued(self) -> int:
        """Commands waiting for the writer."""
        return len(self._queue)

    # -- queueing ----------------------------------------------------------------------------

    def publish(self, channel: bytes, data: bytes) -> None:
        """Queue a PUBLISH (kept through an outage, up to the buffer bound)."""
        self._publish(("PUBLISH", channel, data))

    def publish_history(self, key: bytes, channel: bytes, data: bytes, keep_ms: int) -> None:
        """Queue a PUBLISH on a watched channel that keeps the message in the channel's
        history ``key`` for ``keep_ms`` first (``keys.HISTORY_PUBLISH``); kept like a PUBLISH."""
        self._publish(("EVALSHA", self.history_sha, 1, key, channel, data, keep_ms))

    def _publish(self, args: tuple[Any, ...]) -> None:
        queue = self._queue
        if not (self.writer_up and self.reader_up):
            # Either side down means Redis is (about to be found) unreachable.
            self.stats.buffered += 1
            if len(queue) >= self.buffer_limit:
                self._drop_oldest_publish()
                if len(queue) >= self.buffer_limit:
                    self.stats.dropped += 1
                    return
        elif len(queue) >= self.queue_limit and not self._overflow(False):
            return
        queue.append(Command(PUBLISH, args, None))
        if len(queue) == 1:
            self._wake()

    def command(self, *args: Any, keep: bool = False) -> None:
        """Queue a state write.

        Dropped while Redis is unreachable (owners rewrite their state later), unless
        ``keep``: then it waits in the queue like a publish and goes out after reconnecting
        (within ``buffer_limit``). Past ``queue_limit`` it takes the place of the oldest
        plain publish, or else of the oldest state write.
        """
        queue = self._queue
        if not self.writer_up:
            if not keep:
                return
            if len(queue) >= self.buffer_limit and not self._drop_oldest(KEEP):
                self.stats.dropped += 1
                return
        elif len(queue) >= self.queue_limit and not self._overflow(True):
            return
        queue.append(Command(KEEP if keep else STATE, args, None))
        self._wake()

    def query(self, args: tuple[Any, ...], future: Waiter) -> None:
        """Queue a command whose reply ``future`` waits for; raises while Redis is unreachable."""
        if not self.writer_up:
            raise self.unavailable()
        if len(self._queue) >= self.queue_limit and not self._overflow(True, counted=False):
            raise BackplaneUnavailable(f"the Redis queue is full ({self.queue_limit} commands)")
        self._queue.append(Command(QUERY, args, future))
        self._wake()

    def publish_counted(self, channel: bytes, data: bytes, future: Waiter) -> None:
        """Queue a PUBLISH whose receiver count ``future`` waits for (in order with the other
        publishes); raises while Redis is unreachable."""
        if not self.writer_up:
            raise self.unavailable()
        if len(self._queue) >= self.queue_limit and not self._overflow(True, counted=False):
            raise BackplaneUnavailable(f"the Redis queue is full ({self.queue_limit} commands)")
        self._queue.append(Command(PUBLISH, ("PUBLISH", channel, data), future))
        self._wake()

    def unavailable(self) -> BackplaneUnavailable:
        """The error for a caller who cannot wait for Redis."""
        return BackplaneUnavailable(f"Redis is unreachable ({self.last_error or 'connecting'})")

    def _drop_oldest_publish(self) -> None:
        for i, cmd in enumerate(self._queue):
            if cmd.kind == PUBLISH and cmd.future is None:
                del self._queue[i]
                self.stats.dropped += 1
                return

    def _drop_oldest(self, kind: int) -> bool:
        """Make room in the outage buffer for a ``kind`` command: drop the oldest plain
        publish, else the oldest command of ``kind`` (counted); False when there is none."""
        queue = self._queue
        n = len(queue)
        self._drop_oldest_publish()
        if len(queue) < n:
            return True
        for i, cmd in enumerate(queue):
            if cmd.kind == kind and cmd.future is None:
                del queue[i]
                self.stats.dropped += 1
                return True
        return False

    def _overflow(self, state: bool, counted: bool = True) -> bool:
        """The queue is at ``queue_limit`` while Redis is reachable: make room for one more
        command by dropping the oldest plain publish; for a ``state`` command (a state write
        or a query) with no publish queued, the oldest state write. Counted. False when
        nothing may go: then the new command is dropped instead (counted, unless not
        ``counted``: its caller hears of it)."""
        queue = self._queue
        victim = -1
        for i, cmd in enumerate(queue):
            if cmd.future is None:
                if cmd.kind == PUBLISH:
                    victim = i
                    break
                if state and victim < 0:
                    victim = i  # the oldest state write, should no publish be queued
        if victim < 0:
            if counted:
                self.stats.overflowed += 1
            return False
        del queue[victim]
        self.stats.overflowed += 1
        return True

    # -- outages -----------------------------------------------------------------------------

    def fail_pending(self, exc: Exception, *, keep_queued: bool) -> None:
        """Fail every command somebody waits for; keep publishes and KEEP writes only if
        ``keep_queued`` (an outage, not a shutdown), dropping the rest."""
        keep: deque[Command] = deque()
        for cmd in self._queue:
            if cmd.future is not None:
                # Somebody waits for this reply: tell them now rather than much later.
                if not cmd.future.done():
                    cmd.future.set_exception(exc)
            elif cmd.kind in (PUBLISH, KEEP) and keep_queued:
                keep.append(cmd)
        self._queue = keep

    def detach(self) -> deque[Command]:
        """Take the whole queue out, leaving it empty (see :meth:`reattach`)."""
        held = self._queue
        self._queue = deque()
        return held

    def reattach(self, held: deque[Command]) -> None:
        """Queue ``held`` after whatever was queued since :meth:`detach`."""
        self._queue.extend(held)

    # -- batches -----------------------------------------------------------------------------

    def take(self, now: float) -> Batch | None:
        """The next batch to send at time ``now``; None when there is none: the queue is
        empty, or holds nothing but publishes until ``hold_until``."""
        queue = self._queue
        if not queue:
            return None
        if self.hold_until > now:
            # Publishes wait for the other nodes to resubscribe; the rest goes now.
            batch = [c for c in queue if c.kind != PUBLISH]
            if not batch:
                return None
            self._queue = deque(c for c in queue if c.kind == PUBLISH)
        else:
            n = min(len(queue), self.max_batch)
            batch = [queue.popleft() for _ in range(n)]
        # Runs of plain PUBLISHes travel as one script call: Redis does the same work,
        # and one command is packed and one reply parsed instead of hundreds.
        script = self.publish_script
        groups: list[list[Command]] = []
        runs: list[bool] = []  # per group: a run of plain PUBLISHes
        run: list[Command] = []
        for cmd in batch:
            # A plain PUBLISH (three arguments; not a history publish, not a counted one).
            if cmd.kind == PUBLISH and cmd.future is None and script and len(cmd.args) == 3:
                run.append(cmd)
                continue
            if run:
                groups.append(run)
                runs.append(True)
                run = []
            groups.append([cmd])
            runs.append(False)
        if run:
            groups.append(run)
            runs.append(True)
        commands: list[tuple[Any, ...]] = []
        for group, is_run in zip(groups, runs, strict=True):
            if is_run:
                args: list[Any] = ["EVALSHA", self.publish_sha, 0]
                for cmd in group:
                    args.append(cmd.args[1])
                    args.append(cmd.args[2])
                commands.append(tuple(args))
            else:
                commands.append(group[0].args)
        return batch, groups, commands

    def put_back(self, batch: list[Command]) -> None:
        """Return a batch whose fate is unknown (the connection failed) to the front.

        Nothing is known to have been applied, so it all goes again (a publish may then go
        out twice after a reconnect: at-least-once beats silent loss), but state writes,
        which their owners rewrite after reconnecting.
        """
        self._queue.extendleft(reversed([c for c in batch if c.kind != STATE]))

    def requeue(self, commands: list[Command]) -> None:
        """Queue ``commands`` again at the front, in order (Redis did not run them)."""
        self._queue.extendleft(reversed(commands))
