"""Exactly once across retries, and snapshots: a new member loads a snapshot first."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgpack
import pytest

from copycat import LOAD_SNAPSHOT
from copycat.host import Session
from copycat.raft import EntryKind
from tests.host.conftest import consume_into, until

if TYPE_CHECKING:
    from .conftest import Cluster

GID = 77


async def _take(feed, count: int, timeout_s: float = 15.0) -> list[object]:
    out: list[object] = []

    async def run() -> None:
        async for item in feed:
            out.append(item)
            if sum(1 for x in out if x is not LOAD_SNAPSHOT) == count:
                return

    await asyncio.wait_for(run(), timeout_s)
    return out


def _log_payloads(cluster: Cluster, node_id: int, gid: int) -> list[tuple[bytes, int]]:
    group_log = cluster.stores[node_id].group(gid)
    entries = group_log.entries(group_log.first_index(), group_log.last_index() + 1)
    keys = []
    for e in entries:
        if e.kind == EntryKind.NORMAL and e.data:
            _fmt, session, seq, _first, _data = msgpack.unpackb(e.data)
            keys.append((session, seq))
    return keys


@pytest.mark.asyncio
async def test_retried_proposals_are_delivered_once(cluster: Cluster) -> None:
    """The proposer's member stops hearing appends, so it never sees its proposals
    commit and proposes them again; the log then holds duplicates, and every
    subscriber still sees each proposal exactly once."""
    for node_id in (1, 2, 3):
        await cluster.add(node_id, proposal_retry_s=0.15)
    leader = await cluster.start_group(GID, [1, 2, 3])
    proposer = next(n for n in (1, 2, 3) if n != leader)
    feeds = {n: h.attach_feed(GID, lambda: b"") for n, h in cluster.hosts.items()}
    session = Session()

    # Appends from the leader to the proposer are lost for a while: its proposals are
    # forwarded and committed by the others, but it cannot see that and retries.
    cluster.faults.drop(leader, proposer, 1.0)
    tasks = [
        asyncio.ensure_future(cluster.hosts[proposer].propose(GID, session, b"v%d" % i))
        for i in range(10)
    ]
    await asyncio.sleep(0.6)
    cluster.faults.heal_all()
    await asyncio.wait_for(asyncio.gather(*tasks), 20)

    expected = sorted(b"v%d" % i for i in range(10))
    for node_id, feed in feeds.items():
        got = await _take(feed, 10)
        assert sorted(got) == expected, f"node {node_id}"
    # Proof that retries happened: some (session, seq) is in the log more than once.
    keys = _log_payloads(cluster, leader, GID)
    assert len(keys) > len(set(keys))
    # Nothing more arrives: the duplicates were filtered, not delayed.
    extra = asyncio.ensure_future(_take(feeds[leader], 1, timeout_s=0.5))
    with pytest.raises(TimeoutError):
        await extra


@pytest.mark.asyncio
async def test_new_member_after_compaction_loads_a_snapshot_first(cluster: Cluster) -> None:
    """After a subscriber's member snapshots and compacts, a fourth node added as a
    learner receives the snapshot: its subscriber sees LOAD_SNAPSHOT, gets the state,
    then every later proposal once."""
    for node_id in (1, 2, 3):
        await cluster.add(node_id, snapshot_every_entries=20, snapshot_keep_entries=0)
    leader = await cluster.start_group(GID, [1, 2, 3])
    state: list[bytes] = []
    feed = cluster.hosts[leader].attach_feed(GID, lambda: b"|".join(state))
    session = Session()

    async def consume() -> None:
        async for item in feed:
            assert item is not LOAD_SNAPSHOT
            assert isinstance(item, bytes)
            state.append(item)
            if len(state) == 50:
                return

    consumer = asyncio.ensure_future(consume())
    for i in range(50):
        await cluster.hosts[leader].propose(GID, session, b"k%d" % i)
    await asyncio.wait_for(consumer, 15)
    # Let the subscriber's loop ask for the next item, which takes the snapshot.
    more = asyncio.ensure_future(_take(feed, 1, timeout_s=0.3))
    with pytest.raises(TimeoutError):
        await more
    assert cluster.hosts[leader].counters["snapshots_taken"] >= 1
    assert cluster.hosts[leader].counters["snapshot_bytes_taken"] > 0
    assert cluster.stores[leader].group(GID).first_index() > 1

    await cluster.add(4)
    cluster.hosts[4].open_member(GID)
    await cluster.hosts[leader].add_member(GID, 4, voter=False)
    for i in range(50, 55):
        await cluster.hosts[leader].propose(GID, session, b"k%d" % i)
    feed4 = cluster.hosts[4].attach_feed(GID, lambda: b"")
    items: list[object] = []

    async def consume4() -> None:
        async for item in feed4:
            items.append(item)
            if item == b"k54":
                return

    await asyncio.wait_for(consume4(), 15)
    assert items[0] is LOAD_SNAPSHOT
    restored = feed4.take_snapshot_bytes()
    assert restored is not None
    base = restored.split(b"|")
    rest = [x for x in items[1:] if isinstance(x, bytes)]
    assert base + rest == [b"k%d" % i for i in range(55)]
    assert cluster.hosts[leader].counters["snapshots_sent"] >= 1


@pytest.mark.asyncio
async def test_a_waiting_subscriber_wakes_for_a_snapshot_with_nothing_after_it(
    cluster: Cluster,
) -> None:
    """A subscriber already waiting on a member that then receives a snapshot covering
    the leader's whole log (it was cut off while the leader compacted) sees LOAD_SNAPSHOT
    at once, though no entry follows the snapshot to wake it."""
    for node_id in (1, 2, 3, 4):
        await cluster.add(node_id, snapshot_keep_entries=0)
    leader = await cluster.start_group(GID, [1, 2, 3])
    state: list[bytes] = []
    feed = cluster.hosts[leader].attach_feed(GID, lambda: b"|".join(state))
    consumer = consume_into(feed, state)
    session = Session()
    try:
        for i in range(10):
            await cluster.hosts[leader].propose(GID, session, b"k%d" % i)
        await until(lambda: len(state) == 10)
        cluster.hosts[4].open_member(GID)
        feed4 = cluster.hosts[4].attach_feed(GID, lambda: b"")
        first = asyncio.ensure_future(asyncio.wait_for(anext(aiter(feed4)), 10))
        cluster.faults.cut(leader, 4)
        await cluster.hosts[leader].add_member(GID, 4, voter=False)
        group = cluster.hosts[leader].groups[GID]
        assert group.applied == group.raw.last_index()
        cluster.hosts[leader].take_snapshot(group, group.applied, feed.table.encode(), b"saved")

        # act: the link heals; the leader can only ship the snapshot
        cluster.faults.heal(leader, 4)

        # check
        assert await first is LOAD_SNAPSHOT
        assert feed4.take_snapshot_bytes() == b"saved"
    finally:
        consumer.cancel()
