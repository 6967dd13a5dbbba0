"""A snapshot describes one index: the user's bytes, the session table, the log position
it compacts to and the configuration it carries all belong to that same index (issue 10:
an awaiting provider, an offer adopted under a slow subscriber, the membership of a
lagging snapshot)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat import LOAD_SNAPSHOT
from copycat.host import Session
from copycat.raft import EntryKind
from tests.host.conftest import consume_into, until

if TYPE_CHECKING:
    from copycat.host import Feed

    from .conftest import Cluster

GID = 0x5AFE


def _split(data: bytes | None) -> list[bytes]:
    return data.split(b"|") if data else []


async def _rebuild(feed: Feed, last: bytes, timeout_s: float = 15.0) -> list[bytes]:
    """What a subscriber holds after reading `feed` up to the commit `last`:
    LOAD_SNAPSHOT replaces the state with the snapshot's bytes, a commit appends to it."""
    state: list[bytes] = []

    async def run() -> None:
        async for item in feed:
            if item is LOAD_SNAPSHOT:
                state[:] = _split(feed.take_snapshot_bytes())
                continue
            assert isinstance(item, bytes)
            state.append(item)
            if item == last:
                return

    await asyncio.wait_for(run(), timeout_s)
    return state


@pytest.mark.asyncio
async def test_an_awaiting_provider_snapshots_the_position_it_was_called_at(
    cluster: Cluster,
) -> None:
    """Entries the host's cycle hands the feed while an awaiting provider runs are not in
    the provider's bytes: the snapshot must be taken at the position of the call, or a
    restart from it loses them (and their retries are deduplicated away)."""
    # init: one node snapshotting every 5 entries, compacting everything below
    await cluster.add(1, snapshot_every_entries=5, snapshot_keep_entries=0)
    await cluster.start_group(GID, [1])
    host = cluster.hosts[1]
    state: list[bytes] = []
    called_at: list[int] = []
    release = asyncio.Event()

    async def provider() -> bytes:
        called_at.append(feed.position)
        await release.wait()  # the first call waits for the test; later ones do not
        return b"|".join(state)

    feed = host.attach_feed(GID, provider)
    consumer = consume_into(feed, state)
    session = Session()
    expected: list[bytes] = []
    try:
        # act: propose until the provider is called, then commit more while it waits
        async with asyncio.timeout(15):
            while not called_at:
                expected.append(b"v%d" % len(expected))
                await host.propose(GID, session, expected[-1])
                await asyncio.sleep(0.01)
            for _ in range(3):
                expected.append(b"v%d" % len(expected))
                await host.propose(GID, session, expected[-1])
        await until(lambda: feed.position > called_at[0])  # consumed during the await
        release.set()
        await until(lambda: host.counters["snapshots_taken"] >= 1)
        await until(lambda: len(state) == len(expected))

        # check: the snapshot claims the position of the call
        assert cluster.stores[1].group(GID).snapshot_metadata().index == called_at[0]
    finally:
        consumer.cancel()

    # check: after a restart, the snapshot plus the commits after it hold every value once
    store = cluster.stores[1]
    await cluster.stop(1)
    await cluster.add(1, store=store, snapshot_every_entries=5, snapshot_keep_entries=0)
    await cluster.wait_leader(GID)
    restarted = cluster.hosts[1].attach_feed(GID, lambda: b"")
    await cluster.hosts[1].propose(GID, Session(), b"end")
    assert await _rebuild(restarted, b"end") == [*expected, b"end"]


@pytest.mark.asyncio
async def test_what_is_offered_while_the_provider_awaits_is_handed_out_without_more_writes(
    cluster: Cluster,
) -> None:
    """The last write before a quiet spell, committed while an awaiting provider runs,
    is taken into the feed's buffer from memory; the feed must hand it out once the
    provider returns, not wait for a next write that never comes (whole-cluster
    simulator: a subscriber one value short for good)."""
    # init: one node snapshotting every 5 entries
    await cluster.add(1, snapshot_every_entries=5)
    await cluster.start_group(GID, [1])
    host = cluster.hosts[1]
    state: list[bytes] = []
    called = asyncio.Event()
    release = asyncio.Event()

    async def provider() -> bytes:
        called.set()
        await release.wait()
        return b"|".join(state)

    feed = host.attach_feed(GID, provider)
    consumer = consume_into(feed, state)
    session = Session()
    expected: list[bytes] = []
    try:
        # act: propose until the provider is called, then exactly one more write
        async with asyncio.timeout(15):
            while not called.is_set():
                expected.append(b"v%d" % len(expected))
                await host.propose(GID, session, expected[-1])
                await asyncio.sleep(0.01)
            expected.append(b"last")
            await host.propose(GID, session, b"last")
        release.set()
        # check: handed out with no write after it
        await until(lambda: len(state) == len(expected))
        assert state == expected
    finally:
        consumer.cancel()


@pytest.mark.asyncio
async def test_an_offered_snapshot_never_compacts_past_a_slow_subscriber(
    cluster: Cluster,
) -> None:
    """Member B's subscriber does not read while member A's subscriber snapshots and
    offers its snapshots to B: B may record them, but its log must keep every entry
    after its subscriber's position, which then reads every value in order, once."""
    # init: two voters, both snapshotting every 5 entries with nothing kept below
    for node_id in (1, 2):
        await cluster.add(node_id, snapshot_every_entries=5, snapshot_keep_entries=0)
    await cluster.start_group(GID, [1, 2])
    host_a, host_b = cluster.hosts[1], cluster.hosts[2]
    state_a: list[bytes] = []
    feed_a = host_a.attach_feed(GID, lambda: b"|".join(state_a))
    feed_b = host_b.attach_feed(GID, lambda: b"")  # never asked: B's feed is not read
    consumer = consume_into(feed_a, state_a)
    session = Session()
    expected: list[bytes] = []
    log_b = cluster.stores[2].group(GID)
    try:
        # act: propose through A until B adopted one of A's offers
        async with asyncio.timeout(20):
            while log_b.snapshot_metadata().index == 0 or len(expected) < 30:
                expected.append(b"w%d" % len(expected))
                await host_a.propose(GID, session, expected[-1])
        await until(lambda: len(state_a) == len(expected))
    finally:
        consumer.cancel()
    assert host_a.counters["snapshots_taken"] >= 1
    assert feed_b.position < log_b.snapshot_metadata().index, "B's subscriber was not behind"

    # check: nothing after B's subscriber's position was compacted away, and it reads
    # every value in order, once (no CompactedError)
    assert log_b.first_index() <= feed_b.position + 1
    await host_b.propose(GID, session, b"end")
    assert await _rebuild(feed_b, b"end") == [*expected, b"end"]


def _conf_change_indexes(cluster: Cluster, node_id: int) -> list[int]:
    group_log = cluster.stores[node_id].group(GID)
    entries = group_log.entries(group_log.first_index(), group_log.last_index() + 1)
    return [e.index for e in entries if e.kind == EntryKind.CONF_CHANGE]


@pytest.mark.asyncio
async def test_a_snapshot_carries_the_configuration_as_of_its_own_index(
    cluster: Cluster,
) -> None:
    """A snapshot at a subscriber's lagging position carries the membership in force at
    that position, not the one raft has applied since (a learner added later is not in
    it; a snapshot past the change has it)."""
    # init: one voter whose subscriber stops reading after three values
    await cluster.add(1, snapshot_every_entries=10_000)
    await cluster.add(2)
    await cluster.start_group(GID, [1])
    host = cluster.hosts[1]
    feed = host.attach_feed(GID, lambda: b"")
    session = Session()
    for i in range(3):
        await host.propose(GID, session, b"x%d" % i)
    async with asyncio.timeout(10):
        reader = aiter(feed)
        got = [await anext(reader) for _ in range(3)]
    assert got == [b"x0", b"x1", b"x2"]
    lagging_at = feed.position

    # act: node 2 joins as a learner after the subscriber's position, more values follow
    cluster.hosts[2].open_member(GID)
    await asyncio.wait_for(host.add_member(GID, 2, voter=False), 15)
    for i in range(3, 5):
        await host.propose(GID, session, b"x%d" % i)
    group = host.groups[GID]
    change_at = _conf_change_indexes(cluster, 1)[-1]
    assert lagging_at < change_at <= group.applied
    host.take_snapshot(group, lagging_at, feed.table.encode(), b"x0|x1|x2")

    # check: the lagging snapshot does not hold the learner
    lagging = cluster.stores[1].group(GID).snapshot_metadata()
    assert lagging.index == lagging_at
    assert lagging.conf_state.voters == frozenset({1})
    assert 2 not in lagging.conf_state.members()

    # check: a snapshot past the change holds it
    host.take_snapshot(group, group.applied, feed.table.encode(), b"x0|x1|x2|x3|x4")
    later = cluster.stores[1].group(GID).snapshot_metadata()
    assert later.index == group.applied
    assert later.conf_state.voters == frozenset({1})
    assert later.conf_state.learners == frozenset({2})
    assert len(group.confs) == 1, "records below the latest snapshot are kept"


@pytest.mark.asyncio
async def test_no_snapshot_where_the_configuration_is_not_known(cluster: Cluster) -> None:
    """Raft applies a whole batch of changes before the host looks (a new group's
    bootstrap entries: one ADD_VOTER each): between the first and the last, the host
    cannot tell the configuration, so it takes no snapshot there rather than one that
    carries a later membership."""
    # init: node 1 applies the bootstrap entries of voters 1, 2, 3 in one batch
    await cluster.add(1, snapshot_keep_entries=0)
    cluster.hosts[1].create_group(GID, [1, 2, 3])
    group = cluster.hosts[1].groups[GID]
    await until(lambda: group.applied >= 3)
    table = cluster.hosts[1].attach_feed(GID, lambda: b"").table.encode()
    group_log = cluster.stores[1].group(GID)

    # act / check: at index 2 (voters {1, 2} in force) no snapshot is taken
    cluster.hosts[1].take_snapshot(group, 2, table, b"")
    assert group_log.snapshot_metadata().index == 0
    assert group_log.first_index() == 1

    # act / check: at index 3 the configuration is known again
    cluster.hosts[1].take_snapshot(group, 3, table, b"")
    meta = group_log.snapshot_metadata()
    assert meta.index == 3
    assert meta.conf_state.voters == frozenset({1, 2, 3})
