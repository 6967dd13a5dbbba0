# The thread facade: `CopyCat` and `Subscription` with blocking calls and channels.
#
# What lives here: the facade classes, which run one asyncio node on a `LoopThread` and
# turn each of its coroutines into a blocking call with a timeout; the pumps that move
# a subscription's async streams into bounded `Channel`s; the snapshot provider bridge
# that runs the user's provider in the reader's thread at the reader's position.
#
# At interpreter exit, every facade still running is shut down (`_shut_down_at_exit`,
# an atexit hook, bounded by `EXIT_SHUTDOWN_TIMEOUT_S`). A loop thread left running
# into interpreter finalization crashes the process: a libuv (uvloop) timer that fires
# there calls PyGILState_Ensure after the interpreter state is gone (SIGSEGV in
# new_threadstate). Stopping the loops before finalization is what asyncio programs get
# for free, since their loop ends with `asyncio.run`.
#
# What must not: replication logic (it belongs to the node), blocking calls on the loop
# thread, or an import of `copycat.CopyCat` at module level (it is looked up when the
# first facade starts, so this module works without it and cannot form an import cycle;
# the node's value types are imported for type checking only).
"""Blocking `CopyCat` and `Subscription` for programs without asyncio."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, final

from copycat._ids import DataStructureId
from copycat._snapshot import LOAD_SNAPSHOT, LoadSnapshot
from copycat.errors import ArgumentError, ClosedError, CopyCatError, ReadTimeoutError
from copycat.sync._channel import (
    DEFAULT_CAPACITY,
    WAKE_INTERVAL_S,
    Channel,
    _Empty,
    deadline_after,
    remaining,
)
from copycat.sync._loop import CANCEL_GRACE_S, LoopThread

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from types import TracebackType
    from typing import Self

    from copycat._config import Config
    from copycat._node import GroupInfo
    from copycat.host import RecoveryReport
    from copycat.membership import MemberInfo
    from copycat.sync._protocols import AsyncNode, AsyncSubscription, NodeFactory

__all__: Final = [
    "DEFAULT_ERROR_CAPACITY",
    "DEFAULT_QUERY_TIMEOUT_S",
    "DEFAULT_SHUTDOWN_TIMEOUT_S",
    "EXIT_SHUTDOWN_TIMEOUT_S",
    "CopyCat",
    "Subscription",
]

T = TypeVar("T")

log = logging.getLogger("copycat.sync")

DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 30.0
"""How long `CopyCat.shutdown()` (and leaving a `with` block) waits for the node to
stop gracefully before it cancels what is left."""

DEFAULT_QUERY_TIMEOUT_S: Final = 10.0
"""How long a query (`address`, `gossip_address`, `members()`, `groups()`,
`counters()`) waits, unless told, for the node's event loop thread to answer before it
raises `TimeoutError`. The node answers at once; only a loop thread kept busy (a
blocking call in the node's thread, an overloaded process) makes a query wait."""

DEFAULT_ERROR_CAPACITY: Final = 256
"""Errors a subscription's `errors` channel buffers before the facade stops reading
further errors from the node."""

_NOT_RUNNING: Final = "the node is not running"
"""The reason `readiness()` gives while the node is not running (`copycat.CopyCat`'s)."""

_NODE_MODULE: Final = "copycat"
_NODE_CLASS: Final = "CopyCat"

EXIT_SHUTDOWN_TIMEOUT_S: Final = 10.0
"""How long the exit hook waits for each node the program left running to shut down
(then it cancels what is left), so that no event loop thread runs into interpreter
finalization."""

_thread_numbers = itertools.count(1)

_running: weakref.WeakSet[CopyCat] = weakref.WeakSet()
"""Facades started and not shut down yet: what the exit hook stops."""


def _shut_down_at_exit() -> None:
    """Shut down every facade the program left running, before the interpreter
    finalizes (see the module comment)."""
    for facade in list(_running):
        log.info("%r was not shut down; shutting it down at exit", facade)
        with contextlib.suppress(Exception):
            facade.shutdown(EXIT_SHUTDOWN_TIMEOUT_S)


atexit.register(_shut_down_at_exit)


def _default_node_factory() -> NodeFactory:
    """`copycat.CopyCat`, looked up when needed (it imports this package's siblings)."""
    module = importlib.import_module(_NODE_MODULE)
    factory = getattr(module, _NODE_CLASS, None)
    if factory is None:
        raise CopyCatError(
            f"{_NODE_MODULE}.{_NODE_CLASS} is not available (a broken install?); "
            "reinstall copycat, or pass node_factory= to copycat.sync.CopyCat"
        )
    return cast("NodeFactory", factory)


class _CommitChannel(Channel[bytes | LoadSnapshot]):
    """The commits channel: it carries each snapshot's bytes beside its LOAD_SNAPSHOT, so
    the facade can read ahead of the reader without mixing snapshots up; and each item's
    position, so that it knows what its reader has been delivered (`_floor`)."""

    def __init__(self, capacity: int, *, name: str) -> None:
        super().__init__(capacity, name=name)
        self._snapshots: deque[bytes] = deque()
        self._loaded: bytes | None = None
        self._floors: deque[tuple[int, int]] = deque()
        """(delivered while the item waits here or is held, its position), per item."""
        self._last_put = 0
        self._next_floor = (0, 0)
        self._held: int | None = None
        """While the reader holds the item it took last: what it was delivered before."""
        self._holder: threading.Thread | None = None
        self._position = 0
        self._delivery = threading.Condition(self._lock)

    def _taken(self, item: bytes | LoadSnapshot) -> None:
        if isinstance(item, LoadSnapshot):
            self._loaded = self._snapshots.popleft()
        if self._floors:
            self._held, self._position = self._floors.popleft()
            self._holder = threading.current_thread()

    def _on_close(self) -> None:
        self._snapshots.clear()
        self._loaded = None
        self._floors.clear()
        self._held = None
        self._delivery.notify_all()

    def _try_take(self) -> bytes | LoadSnapshot | _Empty:
        with self._lock:  # the reader came back: the item it held is delivered
            if self._held is not None:
                self._held = None
                self._holder = None
                self._delivery.notify_all()
        return super()._try_take()

    def _floor(self) -> int | None:
        """The highest position the reader has been delivered through, as far as this
        channel knows (None: nothing of it waits here or in the reader's hands, so what
        the node delivered to the facade counts). Called with the lock held."""
        if self._held is not None:
            return self._held
        if self._floors:
            return self._floors[0][0]
        return None

    def _appended(self, item: bytes | LoadSnapshot) -> None:
        self._floors.append(self._next_floor)

    async def _put_at(self, item: bytes | LoadSnapshot, position: int) -> None:
        # A normal item's predecessors all come before it; a LOAD_SNAPSHOT replaces the
        # state, so until it is taken the reader holds what the items before it built.
        floor = self._last_put if isinstance(item, LoadSnapshot) else position - 1
        self._next_floor = (floor, position)  # one producer: entered by `_appended`
        await self._put(item)
        self._last_put = position

    def _wait_floor(self, position: int, deadline: float, what: str) -> int | None:
        """Block until the reader has been delivered `position` (the node already
        delivered it to the facade): None then, or at `deadline` what it was delivered."""
        with self._lock:
            while True:
                if self._closed:
                    raise ClosedError(f"the {self._name} channel was closed")
                floor = self._floor()
                if floor is None or floor >= position:
                    return None
                if self._held is not None and self._holder is threading.current_thread():
                    raise CopyCatError(
                        f"{what} in the thread that reads commits, while it holds an item, "
                        "would wait forever (the item is delivered when that thread comes "
                        "back for the next one); wait in another thread"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    return floor
                self._delivery.wait(min(left, WAKE_INTERVAL_S))

    def _holds(self) -> bool:
        with self._lock:
            return self._held is not None and self._holder is threading.current_thread()

    def _take_loaded(self) -> bytes | None:
        with self._lock:
            data, self._loaded = self._loaded, None
        return data

    async def _put_snapshot_at(self, data: bytes, position: int) -> None:
        with self._lock:
            if not self._closed:
                self._snapshots.append(data)
        await self._put_at(LOAD_SNAPSHOT, position)


@final
class Subscription:
    """A subscription to one data structure, with blocking calls and channels.

    * `propose(data, timeout=None)` returns once `data` is committed, or raises the
      node's typed error (`ProposalTimeoutError`, `NotLeaderError`, ...), or
      `TimeoutError` when `timeout` passes first (outcome unknown: it may still commit,
      once).
    * `commits` delivers every committed proposal's bytes in order, exactly once, or
      `LOAD_SNAPSHOT`, after which `load_snapshot()` returns the state to reload.
    * `errors` delivers the errors no `propose` call reports.
    * `read_barrier()` returns once the thread reading `commits` took every entry
      committed before the call (reads are local and may be stale otherwise);
      `wait_delivered(position)` once it took the item at a position `propose`
      returned. Call them from another thread than the reader.
    * The snapshot provider you gave `subscribe` runs in the thread that reads
      `commits`, while it waits for the next item and after it took every item handed
      out before: it sees exactly the state those items built, and never runs at the
      same time as your commit handling.
    * `close()` leaves the data structure; the channels end.

    Made by `CopyCat.subscribe`.
    """

    def __init__(
        self,
        facade: CopyCat,
        inner: AsyncSubscription,
        commits: _CommitChannel,
        errors: Channel[CopyCatError],
        pumps: tuple[asyncio.Task[None], ...],
    ) -> None:
        self._facade = facade
        self._inner = inner
        self._commits = commits
        self._errors = errors
        self._pumps = pumps
        self._lock = threading.Lock()
        self._closed = False
        self._data_structure_id = inner.data_structure_id

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<copycat.sync.Subscription {self._data_structure_id} {state}>"

    @property
    def data_structure_id(self) -> DataStructureId:
        """The id of the data structure subscribed to."""
        return self._data_structure_id

    @property
    def commits(self) -> Channel[bytes | LoadSnapshot]:
        """Committed proposals in order, exactly once, and `LOAD_SNAPSHOT` markers.
        Bounded by the `capacity` given to `subscribe`: when it is full, the facade
        stops reading from the node until you take an item."""
        return self._commits

    @property
    def errors(self) -> Channel[CopyCatError]:
        """Errors of this subscription that no `propose` call reports (bounded by
        `DEFAULT_ERROR_CAPACITY`)."""
        return self._errors

    @property
    def closed(self) -> bool:
        """True once `close()` was called or the facade shut down."""
        return self._closed or not self._facade.running

    def propose(
        self, data: bytes, timeout: float | None = None, *, wait_delivered: bool = False
    ) -> int:
        """Propose `data`; return once it is committed, with its position (the raft
        index of the entry that carries it). Waits up to `timeout` seconds (None: until
        the node's `proposal_timeout_s` decides).

        With `wait_delivered=True` it returns only once the thread reading `commits`
        took it and came back for the next item (`wait_delivered(position)`); called
        from that thread while it holds an item, it raises `CopyCatError` at once,
        before proposing (it would wait forever).

        Raises the node's error with its original type, `TimeoutError` when `timeout`
        passes first (the proposal's outcome is then unknown: it commits at most once),
        or `ClosedError` after `close()` or once the facade shut down.
        """
        self._check_open()
        if wait_delivered and self._commits._holds():
            raise CopyCatError(
                "propose(wait_delivered=True) in the thread that reads commits, while it "
                "holds an item, would wait forever; propose from another thread"
            )
        deadline = deadline_after(timeout)
        inner = self._inner
        position = self._facade._call(lambda: inner.propose(data), timeout, "propose()")
        if wait_delivered:
            self.wait_delivered(position, remaining(deadline))
        return position

    def read_barrier(self, timeout: float | None = None) -> int:
        """Return once the thread reading `commits` has been delivered every entry
        committed before the call (it took each item and came back for the next), with
        the position waited for: your state then holds every write whose `propose`
        returned before, on any node (reads are local and may be stale otherwise).
        Waits up to `timeout` seconds (None: the node's `proposal_timeout_s`).

        Raises `ReadTimeoutError` (a `TimeoutError`) when the group has no leader or the
        reader does not get there in time, `ClosedError` once closed, and `CopyCatError`
        when called from the reading thread while it holds an item.
        """
        self._check_open()
        deadline = deadline_after(timeout)
        inner = self._inner
        limit = self._limit(timeout)
        position = self._facade._call(
            lambda: inner.read_barrier(timeout_s=limit), self._grace(timeout), "read_barrier()"
        )
        self._wait_reader(position, deadline, timeout, "read_barrier()")
        return position

    def wait_delivered(self, position: int, timeout: float | None = None) -> None:
        """Return once the thread reading `commits` took the item at `position` (a
        position `propose` returned) and came back for the next one. Waits up to
        `timeout` seconds (None: the node's `proposal_timeout_s`); raises like
        `read_barrier`."""
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ArgumentError(f"a position is an int >= 0, not {position!r}")
        self._check_open()
        if self._commits._holds():
            with self._commits._lock:
                floor = self._commits._floor()
            if floor is not None and floor < position:
                raise CopyCatError(
                    "wait_delivered() in the thread that reads commits, while it holds an "
                    "item, would wait forever; wait in another thread"
                )
        deadline = deadline_after(timeout)
        inner = self._inner
        limit = self._limit(timeout)
        self._facade._call(
            lambda: inner.wait_delivered(position, timeout_s=limit),
            self._grace(timeout),
            "wait_delivered()",
        )
        self._wait_reader(position, deadline, timeout, "wait_delivered()")

    @property
    def position(self) -> int:
        """The position (raft index) of the item the reader of `commits` took last (for
        LOAD_SNAPSHOT, its snapshot's); 0 before the first."""
        with self._commits._lock:
            return self._commits._position

    def _limit(self, timeout: float | None) -> float:
        if timeout is None:
            return float(self._facade.config.proposal_timeout_s)
        deadline_after(timeout)  # validates it
        return float(timeout)

    @staticmethod
    def _grace(timeout: float | None) -> float | None:
        """The node raises its own `ReadTimeoutError` at the limit; the facade's wait
        is a backstop a little later (the loop thread may be slow to answer)."""
        return None if timeout is None else timeout + CANCEL_GRACE_S

    def _wait_reader(
        self, position: int, deadline: float | None, timeout: float | None, what: str
    ) -> None:
        """Wait until the reader of `commits` (not only the facade) passed `position`,
        until `deadline` (None: `proposal_timeout_s` from now); `timeout` is what the
        caller asked for, which the error names."""
        limit = self._limit(timeout)
        end = time.monotonic() + limit if deadline is None else deadline
        floor = self._commits._wait_floor(position, end, what)
        if floor is not None:
            raise ReadTimeoutError(
                self._data_structure_id.group_id,
                position,
                floor,
                limit,
                f"{what}: the thread reading commits did not take {position} and come back",
            )

    def load_snapshot(self, timeout: float | None = None) -> bytes:
        """The state to reload after `commits` delivered `LOAD_SNAPSHOT`: the bytes your
        snapshot provider made. Call it once per `LOAD_SNAPSHOT`, from the thread that
        read it. Without a pending `LOAD_SNAPSHOT` it asks the node (up to `timeout`
        seconds)."""
        data = self._commits._take_loaded()
        if data is not None:
            return data
        self._check_open()
        inner = self._inner
        return self._facade._call(inner.load_snapshot, timeout, "load_snapshot()")

    def close(self, timeout: float | None = None) -> None:
        """Leave the data structure's group and end both channels (buffered commits are
        still readable). Waits up to `timeout` seconds. Idempotent; a no-op after the
        facade shut down."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not self._facade.running:
            return
        self._facade._call(self._close_async, timeout, "Subscription.close()")

    async def _close_async(self) -> None:
        try:
            await self._inner.close()
        finally:
            await _stop_pumps(self._pumps)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(
                f"the subscription to {self._data_structure_id} was closed: subscribe "
                "again to go on"
            )
        if not self._facade.running:
            raise ClosedError(
                f"the subscription to {self._data_structure_id} is closed: its node was "
                "shut down; start a new copycat.sync.CopyCat and subscribe again"
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_NEW: Final = "new"
_STARTING: Final = "starting"
_RUNNING: Final = "running"
_CLOSED: Final = "closed"


@final
class CopyCat:
    """A CopyCat node for programs without asyncio.

    It runs the asyncio node (`copycat.CopyCat`, or what `node_factory` makes) on one
    event loop in a background daemon thread, and offers the same operations as
    blocking calls. Every blocking call takes `timeout` in seconds (None: no limit) and
    raises `TimeoutError` when it passes; errors from the node are raised in your thread
    with their original type; a KeyboardInterrupt while you wait cancels the operation
    on the loop and propagates at once.

    The same queries as the asyncio node, answered by the node on its loop thread:
    `node_id`, `address`, `gossip_address`, `members()`, `groups()`, `counters()`,
    `http_address`, `metrics()`, `status()`, `readiness()` and `metric_counters()`
    (bounded by `DEFAULT_QUERY_TIMEOUT_S`, or the `timeout` given). Misuse raises what
    the asyncio node raises: `CopyCatError` before `start()` or on a second `start()`,
    `ClosedError` after `shutdown()`.

        with copycat.sync.CopyCat(config) as cc:
            ds_id = cc.allocate_data_structure()
            sub = cc.subscribe(ds_id, snapshot_provider)
            sub.propose(b"put k v")
            for item in sub.commits:
                ...

    `start()` runs once per facade; `shutdown()` stops the node, cancels what is left
    and joins the loop thread within a bound.
    """

    def __init__(self, config: Config, *, node_factory: NodeFactory | None = None) -> None:
        self._config = config
        self._node_factory = node_factory
        self._loop = LoopThread(f"copycat-sync-{next(_thread_numbers)}")
        self._state_lock = threading.Lock()
        self._state = _NEW
        self._node: AsyncNode | None = None
        self._node_id = 0
        self._pumps: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<copycat.sync.CopyCat {self._config.hostname}:{self._config.port} {self._state}>"

    @property
    def config(self) -> Config:
        """The node's configuration."""
        return self._config

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `shutdown()`."""
        return self._state == _RUNNING and self._loop.is_running()

    @property
    def loop_thread(self) -> threading.Thread:
        """The daemon thread that runs the node's event loop."""
        return self._loop.thread

    # -- where this node is (queries) ---------------------------------------------------

    @property
    def node_id(self) -> int:
        """This node's id: 0 until `start()` returns (as on `copycat.CopyCat`), then the
        configured id or the one kept in the data dir. Kept after `shutdown()`."""
        return self._node_id

    @property
    def address(self) -> str:
        """This node's CopyCat transport address as published to the other nodes,
        "host:port"; with `port=0` in the config, the port the OS picked
        (`copycat.CopyCat.address`). Waits up to `DEFAULT_QUERY_TIMEOUT_S`."""
        return self._query(lambda node: node.address, DEFAULT_QUERY_TIMEOUT_S, "address")

    @property
    def name(self) -> str:
        """This node's name for people: `Config.node_name`, else its published transport
        address (`copycat.CopyCat.name`). Waits up to `DEFAULT_QUERY_TIMEOUT_S`."""
        return self._query(lambda node: node.name, DEFAULT_QUERY_TIMEOUT_S, "name")

    @property
    def gossip_address(self) -> str:
        """This node's gossip address, "host:port": what another node lists in
        `peers_to_contact` to join this cluster; with `gossip_port=0` in the config, the
        port the OS picked (`copycat.CopyCat.gossip_address`). Waits up to
        `DEFAULT_QUERY_TIMEOUT_S`."""
        return self._query(
            lambda node: node.gossip_address, DEFAULT_QUERY_TIMEOUT_S, "gossip_address"
        )

    def members(self, *, timeout: float | None = DEFAULT_QUERY_TIMEOUT_S) -> tuple[MemberInfo, ...]:
        """The live members of the cluster as this node sees them, itself included
        (`copycat.CopyCat.members`). Waits up to `timeout` seconds (None: no limit)."""
        return self._query(lambda node: node.members(), timeout, "members()")

    def groups(self, *, timeout: float | None = DEFAULT_QUERY_TIMEOUT_S) -> tuple[GroupInfo, ...]:
        """The raft groups this node hosts a member of, sorted by group id
        (`copycat.CopyCat.groups`). Waits up to `timeout` seconds (None: no limit)."""
        return self._query(lambda node: node.groups(), timeout, "groups()")

    def counters(self, *, timeout: float | None = DEFAULT_QUERY_TIMEOUT_S) -> dict[str, int]:
        """The node's counters, a fresh dict of ints (`copycat.CopyCat.counters`). Waits
        up to `timeout` seconds (None: no limit)."""
        return self._query(lambda node: node.counters(), timeout, "counters()")

    @property
    def http_address(self) -> str | None:
        """ "host:port" of the node's HTTP endpoint (`Config.http_port`), or None when it
        is off: not configured, or the node is not running
        (`copycat.CopyCat.http_address`). Waits up to `DEFAULT_QUERY_TIMEOUT_S`."""
        if not self.running:
            return None
        return self._query(lambda node: node.http_address, DEFAULT_QUERY_TIMEOUT_S, "http_address")

    def metrics(self, *, timeout: float | None = DEFAULT_QUERY_TIMEOUT_S) -> bytes:
        """Every metric of this node in the Prometheus text format
        (`copycat.CopyCat.metrics`). Waits up to `timeout` seconds (None: no limit)."""
        return self._query(lambda node: node.metrics(), timeout, "metrics()")

    def status(
        self,
        *,
        max_groups: int | None = None,
        timeout: float | None = DEFAULT_QUERY_TIMEOUT_S,
    ) -> dict[str, Any]:
        """This node, its members and (at most `max_groups` of) its groups as plain data
        (`copycat.CopyCat.status`). Waits up to `timeout` seconds (None: no limit)."""
        return self._query(lambda node: node.status(max_groups=max_groups), timeout, "status()")

    def readiness(self, *, timeout: float | None = DEFAULT_QUERY_TIMEOUT_S) -> list[str]:
        """Why this node is not ready to serve its subscribers (empty: ready); a node that
        is not running says so, as `copycat.CopyCat.readiness` does. Waits up to
        `timeout` seconds (None: no limit)."""
        if not self.running:
            return [_NOT_RUNNING]
        return self._query(lambda node: node.readiness(), timeout, "readiness()")

    def metric_counters(
        self, *, timeout: float | None = DEFAULT_QUERY_TIMEOUT_S
    ) -> dict[str, dict[str, int]]:
        """The counters behind `copycat_<layer>_events_total`, by layer
        (`copycat.CopyCat.metric_counters`). Waits up to `timeout` seconds (None: no
        limit)."""
        return self._query(lambda node: node.metric_counters(), timeout, "metric_counters()")

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Start the loop thread and the node; return once the node runs. On failure
        (or timeout, or interrupt) everything started is stopped again before the
        error propagates. Runs once per facade."""
        deadline_after(timeout)
        with self._state_lock:
            if self._state == _CLOSED:
                raise ClosedError(
                    "this node was shut down (or its start failed) and cannot start again: "
                    "make a new copycat.sync.CopyCat with the same config (its data dir "
                    "keeps its state)"
                )
            if self._state != _NEW:
                raise CopyCatError(
                    "this node is already started (or starting): start() runs once per facade"
                )
            self._state = _STARTING
        try:
            self._loop.start()
            self._loop.run(self._start_node(), timeout=timeout, what="start()")
        except BaseException:
            self._abort_start()
            raise
        with self._state_lock:
            self._state = _RUNNING
        _running.add(self)

    async def _start_node(self) -> None:
        factory = self._node_factory or _default_node_factory()
        node = factory(self._config)
        self._node = node
        await node.start()
        self._node_id = node.node_id

    def _abort_start(self) -> None:
        node = self._node
        try:
            if node is not None and self._loop.is_running():
                try:
                    self._loop.run(node.shutdown(), timeout=CANCEL_GRACE_S, what="shutdown()")
                except Exception:
                    log.warning("shutting down a node that failed to start failed", exc_info=True)
        finally:
            self._loop.stop(CANCEL_GRACE_S)
            with self._state_lock:
                self._state = _CLOSED

    def shutdown(self, timeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT_S) -> None:
        """Stop the node, end every subscription's channels, stop the event loop and join
        its thread. Waits up to `timeout` seconds for the node to stop gracefully (None:
        no limit), then cancels what is left and joins the thread for at most
        `CANCEL_GRACE_S` more. Raises `TimeoutError` when the graceful stop did not
        finish in time (the node was then stopped by cancellation), or the node's own
        shutdown error. Idempotent."""
        deadline = deadline_after(timeout)
        with self._state_lock:
            if self._state in (_CLOSED, _STARTING):
                return
            was_new = self._state == _NEW
            self._state = _CLOSED
        _running.discard(self)
        if was_new:
            self._loop.stop(CANCEL_GRACE_S)
            return
        try:
            self._loop.run(self._shutdown_node(), timeout=timeout, what="shutdown()")
        finally:
            left = remaining(deadline)
            self._loop.stop(CANCEL_GRACE_S if left is None else max(left, CANCEL_GRACE_S))

    def leave(self, timeout: float | None = None) -> None:
        """Leave the cluster gracefully: hand every replica this node holds over to
        other nodes (`copycat.CopyCat.leave`), then shut down as `shutdown()` does.
        `timeout` bounds the hand-over (None: the node's default, 120 s); groups not
        handed over by then are logged by the node, which then stops anyway."""
        node = self._require_node()
        try:
            self._call(lambda: node.leave(timeout), None, "leave()")
        finally:
            self.shutdown()

    async def _shutdown_node(self) -> None:
        try:
            if self._node is not None:
                await self._node.shutdown()
        finally:
            await _stop_pumps(tuple(self._pumps))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.shutdown()
            return
        # An error is on its way out of the block: report a failing shutdown without
        # replacing it.
        try:
            self.shutdown()
        except Exception:
            log.warning("shutdown after %r failed", exc, exc_info=True)

    # -- operations ---------------------------------------------------------------------

    def new_data_structure_id(self) -> DataStructureId:
        """A fresh data structure id (a ULID)."""
        node = self._require_node()

        async def make() -> DataStructureId:
            return node.new_data_structure_id()

        return self._call(make, None, "new_data_structure_id()")

    def allocate_data_structure(
        self, replicas: int | None = None, *, timeout: float | None = None
    ) -> DataStructureId:
        """Start a new data structure's group of detached replicas (`replicas` of them,
        default `config.replicas`) and return its id. Raises `NotEnoughNodesError` when
        the cluster cannot place an explicit count."""
        node = self._require_node()
        return self._call(
            lambda: node.allocate_data_structure(replicas=replicas),
            timeout,
            "allocate_data_structure()",
        )

    def recover(
        self,
        data_structure_id: DataStructureId | str,
        *,
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> RecoveryReport:
        """Rebuild the data structure's group from this node's member when the majority
        of its voters is gone for good (`copycat.CopyCat.recover`: the same refusals,
        `RecoveryRefusedError`, and the same report)."""
        node = self._require_node()
        return self._call(
            lambda: node.recover(data_structure_id, dry_run=dry_run), timeout, "recover()"
        )

    def subscribe(
        self,
        data_structure_id: DataStructureId | str,
        snapshot_provider: Callable[[], bytes],
        *,
        capacity: int = DEFAULT_CAPACITY,
        timeout: float | None = None,
    ) -> Subscription:
        """Join (or create) the data structure's group with a member on this node.

        `data_structure_id` is an id or its string form (`InvalidIdError` otherwise).
        `snapshot_provider` returns your data structure's state as bytes; it runs in the
        thread that reads `commits` (see `Subscription`). `capacity` bounds the commits
        channel (default `DEFAULT_CAPACITY`).
        """
        node = self._require_node()
        if not callable(snapshot_provider):
            raise ArgumentError(
                "snapshot_provider must be a callable that returns the state as bytes, "
                f"not {type(snapshot_provider).__name__}"
            )
        ds_id = DataStructureId.parse(data_structure_id)
        commits = _CommitChannel(capacity, name=f"commits of {ds_id}")
        errors: Channel[CopyCatError] = Channel(DEFAULT_ERROR_CAPACITY, name=f"errors of {ds_id}")

        async def provide() -> bytes:
            return await commits._run_in_reader(snapshot_provider)

        async def open_subscription() -> tuple[AsyncSubscription, tuple[asyncio.Task[None], ...]]:
            inner = await node.subscribe(ds_id, provide)
            pumps = (
                asyncio.create_task(_pump_commits(inner, commits), name=f"pump {commits._name}"),
                asyncio.create_task(_pump_errors(inner, errors), name=f"pump {errors._name}"),
            )
            commits._bind_producer(pumps[0])
            errors._bind_producer(pumps[1])
            for pump in pumps:
                self._pumps.add(pump)
                pump.add_done_callback(self._pumps.discard)
            return inner, pumps

        inner, pumps = self._call(open_subscription, timeout, "subscribe()")
        return Subscription(self, inner, commits, errors, pumps)

    # -- plumbing -----------------------------------------------------------------------

    def _require_node(self) -> AsyncNode:
        """The running node; raises what `copycat.CopyCat` raises when it is not running:
        `CopyCatError` before `start()` returned, `ClosedError` after `shutdown()`."""
        state = self._state
        if state == _NEW:
            raise CopyCatError(
                "start the node first: call start() or use `with copycat.sync.CopyCat(config)`"
            )
        if state == _STARTING:
            raise CopyCatError("the node is still starting: wait for start() to return")
        node = self._node
        if node is None or not self.running:
            raise ClosedError(
                "this CopyCat node is shut down (or its start failed): make a new "
                "copycat.sync.CopyCat to go on"
            )
        return node

    def _query(self, read: Callable[[AsyncNode], T], timeout: float | None, what: str) -> T:
        """Answer a read-only query with `read(node)` on the loop thread, waiting up to
        `timeout` seconds (`TimeoutError` after that)."""
        node = self._require_node()

        async def ask() -> T:
            return read(node)

        return self._call(ask, timeout, what)

    def _call(self, make: Callable[[], Awaitable[T]], timeout: float | None, what: str) -> T:
        """Run `await make()` on the loop thread (so the node is only ever touched
        there) and wait for it here."""
        if threading.current_thread() is self._loop.thread:
            raise CopyCatError(
                f"{what} was called on the facade's own event loop thread, where blocking "
                "would deadlock; use the asyncio API there (the node is `copycat.CopyCat`)"
            )

        async def call() -> T:
            return await make()

        return self._loop.run(call(), timeout=timeout, what=what)


async def _pump_commits(inner: AsyncSubscription, channel: _CommitChannel) -> None:
    """Move the subscription's commits into `channel`, reading no further while it is
    full; a LOAD_SNAPSHOT travels with its bytes, loaded at its place in the stream."""
    stream = inner.commits()
    try:
        async for item in stream:
            position = inner.position
            if isinstance(item, LoadSnapshot):
                await channel._put_snapshot_at(await inner.load_snapshot(), position)
            else:
                await channel._put_at(item, position)
    except asyncio.CancelledError:
        channel._finish(ClosedError("the subscription or the channel was closed"))
        raise
    except Exception as exc:
        channel._finish(exc)  # the reader gets it, with its type, after the buffered items
    else:
        channel._finish()
    finally:
        await _aclose(stream)


async def _pump_errors(inner: AsyncSubscription, channel: Channel[CopyCatError]) -> None:
    """Move the subscription's errors into `channel`, reading no further while it is full."""
    stream = inner.errors()
    try:
        async for error in stream:
            await channel._put(error)
    except asyncio.CancelledError:
        channel._finish(ClosedError("the subscription or the channel was closed"))
        raise
    except Exception as exc:
        channel._finish(exc)
    else:
        channel._finish()
    finally:
        await _aclose(stream)


async def _aclose(stream: AsyncIterator[object]) -> None:
    """Close an async generator we stopped reading, so its cleanup runs now."""
    aclose: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.warning("closing a subscription stream failed", exc_info=True)


async def _stop_pumps(pumps: tuple[asyncio.Task[None], ...]) -> None:
    for pump in pumps:
        pump.cancel()
    if pumps:
        await asyncio.wait(pumps)
