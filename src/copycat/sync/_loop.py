# One asyncio event loop on a background daemon thread, and blocking calls into it.
#
# What lives here: `LoopThread` (start, run a coroutine from another thread with a
# timeout, stop with a bound) and `wait_future` (an interruptible, deadline-bounded wait
# on a concurrent future that re-raises the coroutine's own exception).
#
# What must not: knowledge of nodes or subscriptions, or any call that blocks the loop
# thread itself.
"""The background event loop of the thread facade."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import TYPE_CHECKING, Final, TypeVar, final

from copycat.errors import ClosedError
from copycat.sync._channel import WAKE_INTERVAL_S, deadline_after, remaining
from copycat.transport import new_event_loop

if TYPE_CHECKING:
    from collections.abc import Coroutine

__all__: Final = ["LoopThread", "wait_future"]

T = TypeVar("T")

log = logging.getLogger("copycat.sync")

CANCEL_GRACE_S: Final = 2.0
"""How long stopping the loop waits for cancelled tasks and async generators to unwind."""


def wait_future(future: concurrent.futures.Future[T], timeout: float | None, what: str) -> T:
    """The result of `future`, waiting up to `timeout` seconds (None: no limit).

    The coroutine's own exception is re-raised with its original type. On timeout the
    future is cancelled and `TimeoutError` raised; if the future was cancelled by the
    loop stopping, `ClosedError`. Any exception raised while waiting (KeyboardInterrupt)
    cancels the future before it propagates, so the loop thread is never left running
    work nobody waits for.
    """
    deadline = deadline_after(timeout)
    try:
        while True:
            left = remaining(deadline)
            if left is not None and left <= 0:
                future.cancel()
                raise TimeoutError(f"{what} did not finish within {timeout} s")
            slice_s = WAKE_INTERVAL_S if left is None else min(left, WAKE_INTERVAL_S)
            done, _ = concurrent.futures.wait((future,), timeout=slice_s)
            if done:
                break
    except BaseException:
        future.cancel()
        raise
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        raise ClosedError(f"{what} was cancelled: the facade is shutting down") from None


@final
class LoopThread:
    """An asyncio event loop (uvloop when installed) running on a daemon thread.

    Start it once, run coroutines on it from any thread with `run`, and stop it once
    with `stop`, which cancels what is left and joins the thread with a bound. Being a
    daemon, the thread never keeps the process alive, even if a task refuses to stop.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._running = threading.Event()
        self._stopping = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (use only from its thread, or through thread-safe calls)."""
        return self._loop

    @property
    def thread(self) -> threading.Thread:
        """The loop's thread."""
        return self._thread

    def is_running(self) -> bool:
        """True between `start()` and `stop()`."""
        return self._running.is_set() and not self._stopping and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Start the thread and wait until the loop runs."""
        self._thread.start()
        if not self._running.wait(timeout):
            raise TimeoutError(f"the event loop thread {self._name} did not start")

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._running.set)
        try:
            self._loop.run_forever()
        finally:
            try:
                self._loop.run_until_complete(self._close_async_generators())
            finally:
                asyncio.set_event_loop(None)
                self._loop.close()

    async def _close_async_generators(self) -> None:
        try:
            await asyncio.wait_for(self._loop.shutdown_asyncgens(), CANCEL_GRACE_S)
        except TimeoutError:
            log.warning("async generators did not close within %s s", CANCEL_GRACE_S)

    def submit(self, coro: Coroutine[object, object, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop; raises `ClosedError` (closing `coro`) when the loop
        is not running."""
        if not self.is_running():
            coro.close()
            raise ClosedError(
                "the facade's event loop is not running (start it, or it was shut down)"
            )
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:
            coro.close()
            raise ClosedError("the facade's event loop has stopped") from None

    def run(self, coro: Coroutine[object, object, T], *, timeout: float | None, what: str) -> T:
        """Run `coro` on the loop and wait for its result in the calling thread (see
        `wait_future` for timeouts, errors and interrupts)."""
        try:
            deadline_after(timeout)  # refuse a bad timeout before scheduling anything
        except ValueError:
            coro.close()
            raise
        return wait_future(self.submit(coro), timeout, what)

    def stop(self, timeout: float = CANCEL_GRACE_S) -> bool:
        """Cancel every task left on the loop, stop it and join the thread, waiting at
        most about `timeout` seconds in all. True if the thread ended. Idempotent."""
        deadline = deadline_after(timeout)
        if self._thread.ident is None:
            # Never started: nothing runs, only the loop's resources to release.
            self._stopping = True
            if not self._loop.is_closed():
                self._loop.close()
            return True
        if not self._stopping and self._thread.is_alive():
            self._stopping = True
            grace = min(CANCEL_GRACE_S, timeout)
            coro = self._cancel_everything(grace)
            try:
                asyncio.run_coroutine_threadsafe(coro, self._loop)
            except RuntimeError:
                coro.close()  # the loop already closed: the thread is ending on its own
        self._stopping = True
        if self._thread is not threading.current_thread():
            self._thread.join(remaining(deadline))
        ended = not self._thread.is_alive()
        if not ended:
            log.warning(
                "the event loop thread %s did not stop within %s s; it is a daemon thread "
                "and will not keep the process alive",
                self._name,
                timeout,
            )
        return ended

    async def _cancel_everything(self, grace_s: float) -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            if pending:
                log.warning("%d task(s) ignored cancellation on shutdown", len(pending))
        self._loop.stop()
