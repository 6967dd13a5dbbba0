"""A leave dropped unfinished (the simulator stops a node's loop while it hands groups
over) closes cleanly: no "coroutine ignored GeneratorExit", which the simulator printed
once in 200 seeds."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from copycat.host._leave import Leave, LeaveConfig

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


async def test_a_hand_over_dropped_unfinished_closes_without_an_error() -> None:
    config = LeaveConfig(node_id=1, tick_interval_s=0.1, election_ticks=10, proposal_timeout_s=5)
    host: Any = SimpleNamespace(groups={7: object()})
    leave = Leave(config, host, repair=None, call=None, view=None, drop=None)  # type: ignore[arg-type]

    async def never(gid: int, deadline: float) -> bool:
        await asyncio.Event().wait()
        return True

    leave.hand_over = never  # type: ignore[method-assign]
    coro = leave.hand_over_all(deadline=asyncio.get_running_loop().time() + 60)
    coro.send(None)  # suspended inside the hand-over, as a node's loop leaves it
    coro.close()  # the coroutine is dropped: it must not await in its cleanup
