"""A bug in one group stops that group only (fail closed), as `InternalError` promises:
its waiting proposal fails with the error, new proposals are refused with it, its
subscriber's stream ends and reports it, and the node's other groups keep committing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.errors import CopyCatError, InternalError
from copycat.host import Session
from copycat.raft import RawNode

from .conftest import consume_into

if TYPE_CHECKING:
    from .conftest import Cluster

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def test_a_bug_in_one_group_stops_it_and_the_others_go_on(cluster: Cluster) -> None:
    host = await cluster.add(1)
    for gid in (1, 2):
        await cluster.start_group(gid, [1])
    broken_feed = host.attach_feed(1, lambda: b"")
    reported: list[CopyCatError] = []
    broken_feed.on_error = reported.append
    healthy: list[bytes] = []
    reader = consume_into(host.attach_feed(2, lambda: b""), healthy)
    await asyncio.wait_for(host.propose(1, Session(), b"before"), 10)

    class Broken(RawNode):
        __slots__ = ()

        def propose_many(self, entries: list[bytes]) -> None:
            raise InternalError("an invariant broke (injected)")

    host.groups[1].raw.__class__ = Broken  # the same layout, one broken method
    both = await asyncio.wait_for(
        asyncio.gather(
            host.propose(1, Session(), b"lost"),
            host.propose(2, Session(), b"kept"),
            return_exceptions=True,
        ),
        10,
    )
    assert isinstance(both[0], InternalError), both
    assert isinstance(both[1], int), both  # group 2's proposal in the same cycle committed

    with pytest.raises(InternalError):
        await asyncio.wait_for(host.propose(1, Session(), b"after"), 10)
    assert reported
    assert isinstance(reported[0], InternalError)
    assert broken_feed.closed
    await asyncio.wait_for(host.propose(2, Session(), b"still"), 10)
    for _ in range(50):
        if healthy == [b"kept", b"still"]:
            break
        await asyncio.sleep(0.02)
    assert healthy == [b"kept", b"still"]
    assert host.counters["groups_stopped"] == 1
    reader.cancel()
