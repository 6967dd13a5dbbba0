"""Detached replicas compact too: the subscriber's member ships its snapshots to them
(the original's detached replicas kept their whole log)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.host import Session
from tests.host.conftest import consume_into, until

if TYPE_CHECKING:
    from .conftest import Cluster

GID = 4242
PROPOSALS = 400


@pytest.mark.asyncio
async def test_detached_logs_stay_bounded_under_a_long_stream(cluster: Cluster) -> None:
    # init: three voters; only node 1 has a subscriber, snapshotting every 50 entries
    for node_id in (1, 2, 3):
        await cluster.add(node_id, snapshot_every_entries=50, snapshot_keep_entries=10)
    await cluster.start_group(GID, [1, 2, 3])
    state: list[bytes] = []
    feed = cluster.hosts[1].attach_feed(GID, lambda: b"|".join(state))

    consumer = consume_into(feed, state)
    try:
        # act: a long stream of proposals
        session = Session()
        for i in range(PROPOSALS):
            await cluster.hosts[1].propose(GID, session, b"%d" % i)
        await until(lambda: len(state) == PROPOSALS)

        # check: every member's log holds a bounded tail, detached ones included
        def bounded() -> bool:
            for store in cluster.stores.values():
                log = store.group(GID)
                if log.last_index() - log.first_index() + 1 > 150:
                    return False
            return True

        await until(bounded)
        for node_id in (2, 3):
            log = cluster.stores[node_id].group(GID)
            assert log.snapshot_metadata().index > 0, f"node {node_id} recorded no snapshot"
    finally:
        consumer.cancel()


@pytest.mark.asyncio
async def test_failing_snapshot_provider_is_reported_and_loses_nothing(cluster: Cluster) -> None:
    await cluster.add(1, snapshot_every_entries=5)
    await cluster.start_group(GID, [1])

    def broken() -> bytes:
        raise RuntimeError("provider is broken")

    errors: list[Exception] = []
    feed = cluster.hosts[1].attach_feed(GID, broken)
    feed.on_error = errors.append
    session = Session()
    for i in range(12):
        await cluster.hosts[1].propose(GID, session, b"%d" % i)
    got: list[object] = []

    async def consume() -> None:
        async for item in feed:
            got.append(item)
            if len(got) == 12:
                return

    await asyncio.wait_for(consume(), 10)
    assert got == [b"%d" % i for i in range(12)]
    # asking for more with nothing buffered takes a snapshot first (12 entries since the
    # last one): the provider fails, and the stream goes on
    more = asyncio.ensure_future(anext(aiter(feed)))
    await until(lambda: bool(errors), 10)
    await cluster.hosts[1].propose(GID, session, b"12")
    assert await asyncio.wait_for(more, 10) == b"12"
    assert errors, "the provider's failure was not reported"
    assert "provider is broken" in str(errors[0])
    assert cluster.stores[1].group(GID).first_index() == 1  # nothing compacted away
