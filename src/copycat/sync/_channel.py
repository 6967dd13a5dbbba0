# Bounded, closable, thread-safe channels between the facade's event loop and user threads.
#
# What lives here: `Channel` (one producer on the event loop, any reader thread; readers
# block, the producer awaits), `select` over several channels, and the small waiting
# helpers the facade shares (deadlines, interruptible waits).
#
# What must not: knowledge of nodes, subscriptions or raft; blocking calls on the event
# loop thread (the producer side only awaits).
"""Queue-like channels in the style of Go's, for the thread facade."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, final, overload

from copycat.errors import ClosedError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__: Final = ["DEFAULT_CAPACITY", "Channel", "select"]

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")

DEFAULT_CAPACITY: Final = 1024
"""Items a channel buffers by default. When it is full the facade stops reading from the
node (backpressure): the node keeps the backlog (a subscriber's lag stays in the log on
disk), and memory stays bounded by the capacity times the largest item."""

WAKE_INTERVAL_S: Final = 0.2
"""Longest single wait of a blocked call. Waits are re-armed until their deadline, so a
KeyboardInterrupt gets through promptly even where lock waits are not interruptible."""


def deadline_after(timeout: float | None) -> float | None:
    """The monotonic time at which `timeout` seconds from now expire (None: never).
    Raises ValueError on a negative or non-finite timeout."""
    if timeout is None:
        return None
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout != timeout:
        raise ValueError(f"timeout must be None or a number of seconds, not {timeout!r}")
    if timeout < 0:
        raise ValueError(f"timeout must not be negative, got {timeout}")
    return time.monotonic() + timeout


def remaining(deadline: float | None) -> float | None:
    """Seconds left until `deadline` (never below 0), or None without a deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class _Empty:
    """Marks "no item" where any value, None included, may be an item."""


_EMPTY: Final = _Empty()


@final
class _Request:
    """A function to run in the reader's thread once the channel is drained."""

    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[], bytes], future: asyncio.Future[bytes]) -> None:
        self.fn = fn
        self.future = future


def _settle(
    future: asyncio.Future[bytes], result: bytes | None, error: BaseException | None
) -> None:
    """Complete `future` from any thread (a no-op once it is done or its loop closed)."""

    def complete() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    # A closed loop means nobody awaits the future any more.
    with contextlib.suppress(RuntimeError):
        future.get_loop().call_soon_threadsafe(complete)


def _wake_producer(future: asyncio.Future[None] | None) -> None:
    if future is None:
        return

    def complete() -> None:
        if not future.done():
            future.set_result(None)

    # A closed loop means the producer is gone.
    with contextlib.suppress(RuntimeError):
        future.get_loop().call_soon_threadsafe(complete)


class Channel(Generic[T]):
    """A bounded queue from the facade's event loop to your threads, like a Go channel.

    * `get(timeout=None)` takes the next item, blocking until there is one; iterate
      (`for item in channel:`) to take items until the channel ends.
    * The channel holds at most `capacity` items. When it is full the facade stops
      reading from the node until you take one (backpressure), so a slow reader costs
      bounded memory here and leaves its lag with the node.
    * When the stream behind it ends, buffered items are still delivered; then
      iteration stops, and `get()` raises `ClosedError`. When the stream failed, the
      failure (with its original type) is raised instead, after the buffered items.
    * `close()` stops reading: buffered items are dropped, the facade stops reading
      from the node, and `get()` raises `ClosedError` in every thread.

    Channels are made by the facade (`Subscription.commits`, `Subscription.errors`);
    each has one producer, the facade's event loop. Read a channel from one thread: a
    subscription's snapshot provider runs in that thread, between two items.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, name: str = "channel") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer of at least 1, got {capacity!r}")
        self._name = name
        self._capacity = capacity
        self._lock = threading.Lock()
        self._items: deque[T] = deque()
        self._watchers: set[threading.Event] = set()
        self._space: asyncio.Future[None] | None = None
        self._producer: asyncio.Task[None] | None = None
        self._request: _Request | None = None
        self._closed = False
        self._ended = False
        self._end_error: BaseException | None = None

    def __repr__(self) -> str:
        with self._lock:
            state = "closed" if self._closed else "ended" if self._ended else "open"
            size = len(self._items)
        return f"<Channel {self._name} {state} {size}/{self._capacity}>"

    # -- reader side ----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Most items the channel buffers."""
        return self._capacity

    @property
    def closed(self) -> bool:
        """True once no item will ever be delivered again: closed by `close()`, or the
        stream ended and every buffered item was taken."""
        with self._lock:
            return self._closed or (self._ended and not self._items)

    def __len__(self) -> int:
        """Items buffered now."""
        with self._lock:
            return len(self._items)

    def get(self, timeout: float | None = None) -> T:
        """The next item, waiting up to `timeout` seconds (None: no limit).

        Raises `TimeoutError` when none arrives in time, `ClosedError` when the channel
        is closed or its stream ended (after every buffered item was taken), or the
        stream's own error when it failed.
        """
        _, item = _receive((self,), timeout)
        return item

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return self.get()
        except ClosedError:
            raise StopIteration from None

    def close(self) -> None:
        """Stop reading: drop buffered items and stop the facade from reading further.
        Readers blocked in `get()` raise `ClosedError`. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._items.clear()
            space, self._space = self._space, None
            request, self._request = self._request, None
            producer = self._producer
            watchers = list(self._watchers)
            self._on_close()
        _wake_producer(space)
        if producer is not None:
            # Stop the producer even while it waits on its own stream, not on this channel.
            with contextlib.suppress(RuntimeError):  # a closed loop: the producer is gone
                producer.get_loop().call_soon_threadsafe(producer.cancel)
        if request is not None:
            _settle(request.future, None, ClosedError(f"the {self._name} channel was closed"))
        for watcher in watchers:
            watcher.set()

    # -- hooks for subclasses (called with the lock held) ---------------------------------

    def _taken(self, item: T) -> None:
        """Called when a reader takes `item`."""

    def _on_close(self) -> None:
        """Called when the reader closes the channel."""

    def _appended(self, item: T) -> None:
        """Called when the producer's `item` enters the buffer."""

    # -- machinery shared by readers --------------------------------------------------------

    def _watch(self, watcher: threading.Event) -> None:
        with self._lock:
            self._watchers.add(watcher)

    def _unwatch(self, watcher: threading.Event) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    def _try_take(self) -> T | _Empty:
        """The next item, or `_EMPTY`; raises when the channel is closed or ended."""
        with self._lock:
            if self._items:
                item = self._items.popleft()
                self._taken(item)
                space, self._space = self._space, None
            elif self._closed:
                raise ClosedError(f"the {self._name} channel was closed")
            elif self._ended:
                if self._end_error is not None:
                    raise self._end_error
                raise ClosedError(f"the {self._name} stream ended")
            else:
                return _EMPTY
        _wake_producer(space)
        return item

    def _serve_request(self) -> bool:
        """Run a pending request in this (the reader's) thread if the channel is drained.
        True if one ran."""
        with self._lock:
            if self._items or self._request is None:
                return False
            request, self._request = self._request, None
        try:
            result = request.fn()
            if not isinstance(result, bytes | bytearray | memoryview):
                raise TypeError(
                    f"the snapshot provider must return bytes, not {type(result).__name__}"
                )
        except Exception as exc:
            # The node receives the failure (and reports it through its stream).
            _settle(request.future, None, exc)
        except BaseException:
            # KeyboardInterrupt or SystemExit: the node learns the snapshot failed, and the
            # interrupt goes on up the reader's thread.
            _settle(request.future, None, ClosedError("the snapshot provider was interrupted"))
            raise
        else:
            _settle(request.future, bytes(result), None)
        return True

    # -- producer side (the facade's event loop thread only) --------------------------------

    def _bind_producer(self, task: asyncio.Task[None]) -> None:
        """Name the task that fills this channel; `close()` cancels it."""
        with self._lock:
            self._producer = task
            closed = self._closed
        if closed:
            task.cancel()

    async def _put(self, item: T) -> None:
        """Append `item`, waiting while the channel is full. Raises `ClosedError` once the
        reader closed the channel."""
        while True:
            with self._lock:
                if self._closed:
                    raise ClosedError(f"the {self._name} channel was closed by its reader")
                assert not self._ended, "put after the stream ended"
                if len(self._items) < self._capacity:
                    self._items.append(item)
                    self._appended(item)
                    watchers = list(self._watchers)
                    break
                assert self._space is None, "one producer per channel"
                space: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._space = space
            try:
                await space
            finally:
                with self._lock:
                    if self._space is space:
                        self._space = None
        for watcher in watchers:
            watcher.set()

    async def _run_in_reader(self, fn: Callable[[], bytes]) -> bytes:
        """Run `fn` in the reader's thread, once every buffered item was taken and the
        reader waits for the next one, and return its result."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._closed:
                raise ClosedError(f"the {self._name} channel was closed by its reader")
            assert self._request is None, "one request at a time"
            self._request = _Request(fn, future)
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.set()
        try:
            return await future
        finally:
            with self._lock:
                if self._request is not None and self._request.future is future:
                    self._request = None

    def _finish(self, error: BaseException | None = None) -> None:
        """End the stream: readers take what is buffered, then see the end (`error`, or
        `ClosedError` when it is None). Idempotent; the first end wins."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self._end_error = error
            request, self._request = self._request, None
            watchers = list(self._watchers)
        if request is not None:
            _settle(request.future, None, ClosedError(f"the {self._name} stream ended"))
        for watcher in watchers:
            watcher.set()


@overload
def select(a: Channel[A], /, *, timeout: float | None = None) -> tuple[Channel[A], A]: ...


@overload
def select(
    a: Channel[A], b: Channel[B], /, *, timeout: float | None = None
) -> tuple[Channel[A], A] | tuple[Channel[B], B]: ...


@overload
def select(
    a: Channel[A], b: Channel[B], c: Channel[C], /, *, timeout: float | None = None
) -> tuple[Channel[A], A] | tuple[Channel[B], B] | tuple[Channel[C], C]: ...


@overload
def select(*channels: Channel[T], timeout: float | None = None) -> tuple[Channel[T], T]: ...


# The implementation takes channels of any item type: the overloads above are what
# callers see (mypy cannot express "one of these pairs" with a single type variable).
def select(*channels: Channel[Any], timeout: float | None = None) -> tuple[Channel[Any], Any]:
    """Wait until one of `channels` has an item and take it, like Go's `select` over
    receives: returns `(channel, item)`. When several have items, one is picked at
    random, so no channel starves the others. Channels of different item types may be
    mixed (`select(sub.commits, sub.errors)`): tell them apart by `channel is ...` and
    narrow the item with `isinstance`.

    Raises `TimeoutError` when nothing arrives within `timeout` seconds (None: no
    limit); `ClosedError` (or the stream's error) as soon as one of the channels is
    closed or ended and drained, as `get()` would.
    """
    if not channels:
        raise ValueError("select() needs at least one channel")
    return _receive(channels, timeout)


def _receive(channels: tuple[Channel[T], ...], timeout: float | None) -> tuple[Channel[T], T]:
    deadline = deadline_after(timeout)
    watcher = threading.Event()
    for channel in channels:
        channel._watch(watcher)
    try:
        while True:
            watcher.clear()
            start = random.randrange(len(channels)) if len(channels) > 1 else 0
            for offset in range(len(channels)):
                channel = channels[(start + offset) % len(channels)]
                item = channel._try_take()
                if not isinstance(item, _Empty):
                    return channel, item
            if any(channel._serve_request() for channel in channels):
                continue
            left = remaining(deadline)
            if left is not None and left <= 0:
                names = ", ".join(channel._name for channel in channels)
                raise TimeoutError(f"nothing arrived on {names} within {timeout} s")
            watcher.wait(WAKE_INTERVAL_S if left is None else min(left, WAKE_INTERVAL_S))
    finally:
        for channel in channels:
            channel._unwatch(watcher)
