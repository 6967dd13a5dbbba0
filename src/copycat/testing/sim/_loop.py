# The simulator's event loop: asyncio on a virtual clock, with per-process pause and
# crash.
#
# What lives here: `VirtualLoop`, an `asyncio.BaseEventLoop` whose `time()` is a number
# the loop itself advances: when no callback is ready, the clock jumps to the next timer
# (the "select" never blocks), so a minute of simulated time costs only the work done in
# it. Every callback runs under a gate that looks up the simulated process it belongs to
# (the `PROCESS` context variable, inherited by every task and callback a process
# creates): a paused process's callbacks wait, in order, until it resumes; a crashed
# process's callbacks never run again, as if the process vanished (no `finally` runs).
#
# What must not: I/O, threads, the wall clock. `run_in_executor` refuses, and there is no
# selector: nothing in a simulation may touch a socket or a file descriptor.
"""`VirtualLoop` (asyncio on virtual time) and `Process` (what pause and crash act on)."""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable


class DeadlockError(RuntimeError):
    """Every task waits and no timer is set: nothing can ever happen again."""


class Vanished(BaseException):
    """Ends the callback of a process that vanished while it ran (a power cut in the
    middle of a write): nothing after it runs, and being a `BaseException`, no `except
    Exception` in the real code carries on as if only the write had failed."""


class Process:
    """One run of one simulated node: what its tasks and callbacks belong to."""

    __slots__ = ("deferred", "name", "paused", "tasks", "vanished")

    def __init__(self, name: str) -> None:
        self.name = name
        self.paused = False
        self.vanished = False
        self.tasks: list[asyncio.Task[Any]] = []
        """Its tasks not known done, held until the loop closes: a task the crash left
        mid-await, collected at a random later time, would run its `finally` then."""
        self.deferred: list[tuple[contextvars.Context, Callable[..., object], tuple[Any, ...]]] = []

    def __repr__(self) -> str:
        state = "crashed" if self.vanished else "paused" if self.paused else "running"
        return f"<Process {self.name} {state}>"


PROCESS: Final[contextvars.ContextVar[Process | None]] = contextvars.ContextVar(
    "copycat_sim_process", default=None
)


class _Clock:
    """The selector asyncio polls between turns: it only moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def select(self, timeout: float | None) -> list[object]:
        if timeout is None:
            raise DeadlockError("every task waits and no timer is set")
        if timeout > 0:
            self.now += timeout
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    """An event loop on virtual time. Use `loop.run_until_complete(main())`."""

    def __init__(self, *, budget: int = 2_000_000) -> None:
        """`budget`: callbacks run before the loop stops itself (a run whose clock stopped
        moving, or one far slower than it should be, ends instead of spinning)."""
        super().__init__()
        self.budget = budget
        self._clock = _Clock()
        self._selector = self._clock
        self._clock_resolution = 1e-9
        self.callbacks_run = 0
        self.errors: list[str] = []
        """Exceptions nothing handled (a task's, a callback's): bugs, for the checker."""
        self.processes: set[Process] = set()
        """Every process that made a task, until the loop closes (see `Process.tasks`)."""
        self.set_task_factory(self._make_task)
        self.set_exception_handler(_record)

    def time(self) -> float:
        return self._clock.now

    def _make_task(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Any,  # noqa: ANN401
        **kwargs: Any,  # noqa: ANN401
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        context = kwargs.get("context")
        process = context.get(PROCESS) if context is not None else PROCESS.get()
        if process is not None:
            self.processes.add(process)
            if len(process.tasks) >= 256 and len(process.tasks) & (len(process.tasks) - 1) == 0:
                process.tasks = [t for t in process.tasks if not t.done()]  # now and then
            process.tasks.append(task)
        return task

    def _check_closed(self) -> None:
        # Tasks of crashed processes are collected after the loop closed; their last
        # callbacks land here and are never run, which is what a crash means.
        pass

    def _process_events(self, event_list: list[object]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def run_in_executor(self, executor: object, func: object, *args: object) -> Any:  # noqa: ANN401
        raise RuntimeError("no threads in a simulation: this code path needs a seam")

    # Every callback, ready or timed, goes through `_gate` in its own context.
    def _call_soon(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> asyncio.Handle:
        ctx = context if context is not None else contextvars.copy_context()
        handle: asyncio.Handle = super()._call_soon(self._gate, (ctx, callback, args), ctx)  # type: ignore[misc]
        return handle

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,  # noqa: ANN401
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        ctx = context if context is not None else contextvars.copy_context()
        return super().call_at(when, self._gate, ctx, callback, args, context=ctx)

    def _gate(
        self, ctx: contextvars.Context, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        process = PROCESS.get()
        if process is not None:
            if process.vanished:
                return
            if process.paused:
                process.deferred.append((ctx, callback, args))
                return
        self.callbacks_run += 1
        if self.callbacks_run > self.budget:
            self.stop()
            return
        callback(*args)

    def resume(self, process: Process) -> None:
        """Let a paused process run again: what it missed runs first, in order."""
        process.paused = False
        deferred, process.deferred = process.deferred, []
        for ctx, callback, args in deferred:
            super()._call_soon(self._gate, (ctx, callback, args), ctx)  # type: ignore[misc]


def _record(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Keeps what nothing handled, except the remains of crashed processes: their tasks
    are dropped while pending, by design, and their async generators collected mid-await."""
    message = str(context.get("message", ""))
    if "was destroyed but it is pending" in message:
        return
    exc = context.get("exception")
    if isinstance(exc, Vanished):
        return
    if isinstance(exc, RuntimeError) and "generator is already running" in str(exc):
        return
    if isinstance(loop, VirtualLoop):
        what = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        process = PROCESS.get()
        handle = context.get("handle")
        gated = getattr(handle, "_args", None) or ()
        if gated and isinstance(gated[0], contextvars.Context):  # a callback of `_gate`
            process = gated[0].get(PROCESS)
        where = f"at {loop.time():.3f} in {process.name if process is not None else 'the sim'}"
        loop.errors.append(f"{where}: {what or message}"[:300])


def process_context(process: Process) -> contextvars.Context:
    """A context whose tasks and callbacks belong to `process`."""
    ctx = contextvars.copy_context()
    ctx.run(PROCESS.set, process)
    return ctx
