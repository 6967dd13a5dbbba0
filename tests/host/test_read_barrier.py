"""Read barriers and read-your-writes in the host (issue 15).

A barrier (`Feed.read_barrier`) asks the group's leader for a read index (ReadIndex,
forwarded by the raft core from a follower or a learner), then waits until the
subscriber's stream has *delivered* that index: the consumer took the item there and
came back for the next one. Concurrent barriers share one ReadIndex round. Without a
leader it gives up with `ReadTimeoutError`; on a closed stream it raises `ClosedError`.
`Host.propose` returns the proposal's position, and `Feed.wait_delivered(position)`
returns once the consumer took it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.errors import ClosedError, CopyCatError, ReadTimeoutError
from copycat.host import Feed, Session

from .conftest import consume_into, until

if TYPE_CHECKING:
    from .conftest import Cluster

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

GID = 0xBA5E
TIMEOUT_S = 20.0
"""Bound of every barrier here: reaching it means the barrier hung."""


def gated_consumer(
    feed: Feed, state: list[bytes], hold_at: bytes, release: asyncio.Event
) -> asyncio.Task[None]:
    """A consumer that appends each item to `state` and, after taking `hold_at`, holds
    it (does not come back to the stream) until `release` is set."""

    async def consume() -> None:
        async for item in feed:
            assert isinstance(item, bytes)
            state.append(item)
            if item == hold_at:
                await release.wait()

    return asyncio.ensure_future(consume())


async def three_voters(cluster: Cluster, **config: object) -> int:
    for node_id in (1, 2, 3):
        await cluster.add(node_id, **config)
    return await cluster.start_group(GID, [1, 2, 3])


def follower_of(leader: int) -> int:
    return next(n for n in (1, 2, 3) if n != leader)


async def test_a_barrier_waits_for_the_slow_consumer_to_pass_the_index(cluster: Cluster) -> None:
    """The barrier's read index is answered, but the consumer still holds an earlier
    item: the barrier returns only once the consumer came back and took everything
    committed before the barrier started."""
    leader = await three_voters(cluster, proposal_retry_s=30.0)
    reader = follower_of(leader)
    host = cluster.hosts[reader]
    state: list[bytes] = []
    release = asyncio.Event()
    consumer = gated_consumer(host.attach_feed(GID, lambda: b""), state, b"w1", release)
    try:
        writer = cluster.hosts[leader]
        session = Session()
        for value in (b"w1", b"w2", b"w3"):
            await writer.propose(GID, session, value)
        await until(lambda: state == [b"w1"])  # the consumer holds w1

        seen_at_return: list[list[bytes]] = []

        async def barrier() -> int:
            index = await host.groups[GID].feed.read_barrier(TIMEOUT_S)  # type: ignore[union-attr]
            seen_at_return.append(list(state))
            return index

        rounds = host.counters["read_index_rounds"]
        task = asyncio.ensure_future(barrier())
        reads = host.groups[GID].reads
        await until(lambda: host.counters["read_index_rounds"] > rounds and not reads.round)
        for _ in range(10):  # the answer is in: give the barrier every chance to return
            await asyncio.sleep(0.01)
        assert not task.done(), "the barrier returned while the consumer held w1"
        assert state == [b"w1"]

        release.set()
        index = await asyncio.wait_for(task, TIMEOUT_S)
        assert seen_at_return == [[b"w1", b"w2", b"w3"]]
        assert index >= 5  # past the bootstrap entries, the no-op and the writes
    finally:
        release.set()
        consumer.cancel()


async def test_concurrent_barriers_share_one_read_index_round(cluster: Cluster) -> None:
    """Twenty barriers started together: the first sends a round, the other nineteen
    arrive while it is in flight and share the next one."""
    leader = await three_voters(cluster, proposal_retry_s=30.0)
    reader = follower_of(leader)
    host = cluster.hosts[reader]
    state: list[bytes] = []
    consumer = consume_into(host.attach_feed(GID, lambda: b""), state)
    try:
        await cluster.hosts[leader].propose(GID, Session(), b"before")
        feed = host.groups[GID].feed
        assert feed is not None
        rounds = host.counters["read_index_rounds"]
        barriers = host.counters["read_barriers"]
        indexes = await asyncio.wait_for(
            asyncio.gather(*(feed.read_barrier(TIMEOUT_S) for _ in range(20))), TIMEOUT_S
        )
        assert host.counters["read_barriers"] - barriers == 20
        assert host.counters["read_index_rounds"] - rounds <= 2
        assert b"before" in state
        assert len(set(indexes)) <= 2  # one answer per round
    finally:
        consumer.cancel()


@pytest.mark.parametrize("role", ["follower", "learner"])
async def test_a_barrier_through_a_follower_or_a_learner_sees_an_acknowledged_write(
    cluster: Cluster, role: str
) -> None:
    """A write acknowledged on the leader is in the state of a follower's or a
    learner's subscriber once a barrier there returns (the core forwards the ReadIndex
    to the leader and relays the answer)."""
    leader = await three_voters(cluster)
    if role == "learner":
        learner = await cluster.add(4)
        learner.open_member(GID)
        await cluster.hosts[leader].add_member(GID, 4, voter=False)
        reader = 4
    else:
        reader = follower_of(leader)
    host = cluster.hosts[reader]
    assert host.group_status(GID) is not None
    state: list[bytes] = []
    consumer = consume_into(host.attach_feed(GID, lambda: b""), state)
    try:
        for n in range(5):
            position = await cluster.hosts[leader].propose(GID, Session(), b"v%d" % n)
            feed = host.groups[GID].feed
            assert feed is not None
            index = await feed.read_barrier(TIMEOUT_S)
            assert index >= position
            assert state[-1] == b"v%d" % n
        status = host.group_status(GID)
        assert status is not None
        assert (reader in status.learners) == (role == "learner")
        assert not status.is_leader
    finally:
        consumer.cancel()


async def test_a_barrier_without_a_leader_times_out_typed(cluster: Cluster) -> None:
    host = await cluster.add(1, proposal_retry_s=0.05)
    host.open_member(GID)  # a member that never hears from a leader
    feed = host.attach_feed(GID, lambda: b"")
    with pytest.raises(ReadTimeoutError, match="no read index") as caught:
        await feed.read_barrier(0.3)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.index is None
    assert caught.value.group == GID
    reads = host.groups[GID].reads
    await until(lambda: not reads.waiting() and GID not in host._reading)  # nothing left


async def test_wait_delivered_returns_only_after_the_consumer_took_the_position(
    cluster: Cluster,
) -> None:
    leader = await three_voters(cluster)
    host = cluster.hosts[leader]
    state: list[bytes] = []
    release = asyncio.Event()
    feed = host.attach_feed(GID, lambda: b"")
    consumer = gated_consumer(feed, state, b"first", release)
    try:
        session = Session()
        first = await host.propose(GID, session, b"first")
        mine = await host.propose(GID, session, b"mine")
        assert mine > first
        entry = host.groups[GID].log.entries(mine, mine + 1)[0]
        assert b"mine" in entry.data  # the position is the entry that carries it
        await until(lambda: state == [b"first"])
        task = asyncio.ensure_future(feed.wait_delivered(mine, TIMEOUT_S))
        for _ in range(10):
            await asyncio.sleep(0.01)
        assert not task.done(), "wait_delivered returned before the consumer took it"
        release.set()
        await asyncio.wait_for(task, TIMEOUT_S)
        assert state == [b"first", b"mine"]
        assert feed.delivered() >= mine
    finally:
        release.set()
        consumer.cancel()


async def test_waiting_inside_the_consumer_loop_raises_instead_of_hanging(
    cluster: Cluster,
) -> None:
    leader = await three_voters(cluster)
    host = cluster.hosts[leader]
    feed = host.attach_feed(GID, lambda: b"")
    position = await host.propose(GID, Session(), b"x")
    await host.propose(GID, Session(), b"y")
    errors: list[Exception] = []

    async def consume() -> None:
        async for item in feed:
            if item == b"x":
                try:
                    await feed.wait_delivered(position + 1, TIMEOUT_S)
                except CopyCatError as exc:
                    errors.append(exc)
                await feed.wait_delivered(position - 1, TIMEOUT_S)  # already delivered
                return

    await asyncio.wait_for(consume(), TIMEOUT_S)
    assert len(errors) == 1
    assert "wait forever" in str(errors[0])


async def test_closing_the_stream_ends_waiting_barriers_with_closed_error(
    cluster: Cluster,
) -> None:
    host = await cluster.add(1, proposal_retry_s=0.05)
    host.open_member(GID)  # no leader: the barrier waits for a read index
    feed = host.attach_feed(GID, lambda: b"")
    task = asyncio.ensure_future(feed.read_barrier(TIMEOUT_S))
    await until(lambda: host.groups[GID].reads.waiting())
    host.detach_feed(GID)
    with pytest.raises(ClosedError):
        await asyncio.wait_for(task, TIMEOUT_S)
    with pytest.raises(ClosedError):
        await feed.read_barrier(TIMEOUT_S)
