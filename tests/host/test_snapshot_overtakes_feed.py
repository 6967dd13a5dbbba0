"""A raft snapshot that overtakes a subscriber's feed replaces what the feed holds
(issue 12): entries the feed consumed into its buffer but had not handed out yet are
part of the snapshot, so after LOAD_SNAPSHOT the subscriber must not receive them again.

The buffer is filled while the subscriber waits in its own (awaiting) snapshot provider:
the host's cycle offers newly applied entries to the feed meanwhile, and the member may
install a snapshot from its leader before the provider returns."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat import LOAD_SNAPSHOT
from copycat.host import Session
from tests.host.conftest import consume_into, until

if TYPE_CHECKING:
    from .conftest import Cluster

GID = 0x0DD5


def _split(data: bytes | None) -> list[bytes]:
    return data.split(b"|") if data else []


@pytest.mark.asyncio
async def test_entries_buffered_when_a_snapshot_overtakes_the_feed_are_not_redelivered(
    cluster: Cluster,
) -> None:
    """Member B's subscriber waits in its provider while B consumes more commits into
    its feed's buffer; B is then cut off, the others commit and compact past it, and on
    healing B installs the leader's snapshot. After LOAD_SNAPSHOT the subscriber gets
    only commits after the snapshot: the snapshot's state plus the later items hold
    every committed value once, in order."""
    # init: three voters snapshotting every 5 entries, compacting everything below
    for node_id in (1, 2, 3):
        await cluster.add(node_id, snapshot_every_entries=5, snapshot_keep_entries=0)
    leader = await cluster.start_group(GID, [1, 2, 3])
    lagging, other = (n for n in (1, 2, 3) if n != leader)
    host_a, host_b = cluster.hosts[leader], cluster.hosts[lagging]
    state_a: list[bytes] = []
    feed_a = host_a.attach_feed(GID, lambda: b"|".join(state_a))
    consumer_a = consume_into(feed_a, state_a)

    # B's subscriber: its first provider call waits for the test
    called_at: list[int] = []
    release = asyncio.Event()
    got: list[bytes | None] = []  # None marks a LOAD_SNAPSHOT
    loads: list[list[bytes]] = []

    async def provider() -> bytes:
        called_at.append(feed_b.position)
        await release.wait()
        return b""

    feed_b = host_b.attach_feed(GID, provider)

    async def consume_b() -> None:
        async for item in feed_b:
            if item is LOAD_SNAPSHOT:
                got.append(None)
                loads.append(_split(feed_b.take_snapshot_bytes()))
                continue
            assert isinstance(item, bytes)
            got.append(item)

    consumer_b = asyncio.ensure_future(consume_b())
    group_b = host_b.groups[GID]
    session = Session()
    expected: list[bytes] = []

    async def propose(n: int) -> None:
        for _ in range(n):
            expected.append(b"v%d" % len(expected))
            await host_a.propose(GID, session, expected[-1])

    try:
        async with asyncio.timeout(30):
            # arrange: B's subscriber enters its provider, then B buffers more commits
            while not called_at:
                await propose(1)
            waiting_at = called_at[0]
            batch = [b"v%d" % (len(expected) + i) for i in range(3)]
            expected.extend(batch)  # proposed together, offered to B's feed together
            await asyncio.gather(*(host_a.propose(GID, session, v) for v in batch))
            await until(lambda: feed_b.position > waiting_at)
            buffered_to = feed_b.position  # consumed, not handed out: the consumer waits

            # act: cut B off; the others commit and compact past it; heal
            cluster.faults.cut(lagging, leader)
            cluster.faults.cut(lagging, other)
            log_a, log_b = cluster.stores[leader].group(GID), cluster.stores[lagging].group(GID)
            while log_a.first_index() <= log_b.last_index() + 1:
                await propose(1)
            cluster.faults.heal_all()
            await until(lambda: group_b.restored_at > buffered_to)  # a raft snapshot
            release.set()
            await propose(1)
            await until(lambda: bool(got) and got[-1] == expected[-1])
    finally:
        consumer_a.cancel()
        consumer_b.cancel()

    # check: the snapshot was announced, and nothing it holds came after it
    assert None in got, "no LOAD_SNAPSHOT after the snapshot overtook the feed"
    last_load = len(got) - 1 - got[::-1].index(None)
    snapshot_state, after = loads[-1], got[last_load + 1 :]
    assert snapshot_state, "the installed snapshot holds no value"
    again = [v for v in after if v in snapshot_state]
    assert not again, f"delivered again after LOAD_SNAPSHOT: {again}"
    # check: the snapshot plus what followed it hold every committed value, once, in order
    assert [*snapshot_state, *after] == expected
