"""The simulator's event loop: virtual time, and pause and crash of one process."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from copycat.testing.sim._loop import DeadlockError, Process, VirtualLoop, process_context

if TYPE_CHECKING:
    from collections.abc import Coroutine

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


def test_time_jumps_to_the_next_timer_without_waiting() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        before = loop.time()
        await asyncio.sleep(3600.0)  # an hour of virtual time
        return before, loop.time()

    before, after = run(main())
    assert after - before == pytest.approx(3600.0)


def test_a_paused_process_misses_nothing_and_runs_late_in_order() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualLoop)
        seen: list[tuple[str, float]] = []
        paused = Process("a")

        async def ticker(name: str) -> None:
            for _ in range(5):
                await asyncio.sleep(1.0)
                seen.append((name, round(loop.time(), 6)))

        tasks = [
            loop.create_task(ticker("a"), context=process_context(paused)),
            loop.create_task(ticker("b"), context=process_context(Process("b"))),
        ]
        await asyncio.sleep(2.5)
        paused.paused = True
        await asyncio.sleep(3.0)
        loop.resume(paused)
        await asyncio.gather(*tasks)
        return seen

    seen = run(main())
    a = [t for name, t in seen if name == "a"]
    b = [t for name, t in seen if name == "b"]
    assert b == [1.0, 2.0, 3.0, 4.0, 5.0]  # the other process ran on
    assert a == [1.0, 2.0, 5.5, 6.5, 7.5]  # the 3.0 tick waited for the resume


def test_a_crashed_process_never_runs_again_not_even_its_finally() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        doomed = Process("a")

        async def body() -> None:
            try:
                await asyncio.sleep(5.0)
                seen.append("woke")
            finally:
                seen.append("finally")

        task = loop.create_task(body(), context=process_context(doomed))
        await asyncio.sleep(1.0)
        doomed.vanished = True
        await asyncio.sleep(10.0)
        assert not task.done()  # never finished, never cancelled: gone
        return seen

    assert run(main()) == []


def test_waiting_forever_with_no_timer_is_reported_as_a_deadlock() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(DeadlockError):
        run(main())


def test_threads_are_refused() -> None:
    async def main() -> None:
        await asyncio.to_thread(print, "never")

    with pytest.raises(RuntimeError, match="no threads"):
        run(main())
