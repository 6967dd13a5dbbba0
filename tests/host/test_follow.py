"""Leadership follows the writers (copycat.host._follow): the decision over windows of
proposals by data center, and the loop on real hosts moving a group's leadership to the
node that writes, and not moving it under two writers alike."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from typing import TYPE_CHECKING

import pytest

from copycat.host import Session
from copycat.host._follow import FollowConfig, LeaderFollower, Streaks

from .conftest import until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .conftest import Cluster

GID = 0xF011
DC = {1: "dc1", 2: "dc2", 3: "dc3"}


def streaks(**overrides: object) -> Streaks:
    config = {"node_id": 1, "after_s": 3.0, "windows": 3, "min_per_window": 10, "cooldown_s": 0.0}
    return Streaks(FollowConfig(**{**config, **overrides}))  # type: ignore[arg-type]


def test_one_other_data_center_for_every_window_moves_it() -> None:
    s = streaks()
    window = {"dc1": 5, "dc2": 95}
    assert s.observe(GID, window, "dc1", since_move_s=math.inf) is None
    assert s.observe(GID, window, "dc1", since_move_s=math.inf) is None
    assert s.observe(GID, window, "dc1", since_move_s=math.inf) == "dc2"
    assert s.observe(GID, window, "dc1", since_move_s=math.inf) is None  # the streak restarts


@pytest.mark.parametrize(
    "broken",
    [
        {"dc1": 50, "dc2": 50},  # two writers alike: below the share
        {"dc2": 5},  # too few to tell
        {"dc1": 95, "dc2": 5},  # the leader's own data center
        {"dc3": 95},  # another data center: a new streak
        {"": 95},  # nodes gossip does not place
    ],
)
def test_a_window_short_of_the_rule_breaks_the_streak(broken: dict[str, int]) -> None:
    s = streaks()
    window = {"dc2": 100}
    s.observe(GID, window, "dc1", since_move_s=math.inf)
    s.observe(GID, window, "dc1", since_move_s=math.inf)
    s.observe(GID, broken, "dc1", since_move_s=math.inf)
    assert s.observe(GID, window, "dc1", since_move_s=math.inf) is None
    assert s.observe(GID, window, "dc1", since_move_s=math.inf) is None


def test_alternating_writers_never_move_it() -> None:
    s = streaks()
    for turn in range(30):
        window = {"dc2": 100} if turn % 2 else {"dc3": 100}
        assert s.observe(GID, window, "dc1", since_move_s=math.inf) is None


def test_a_leader_a_move_brought_waits_out_the_cooldown() -> None:
    s = streaks(cooldown_s=60.0)
    window = {"dc2": 100}
    for since_move in (10.0, 20.0, 30.0, 40.0):
        assert s.observe(GID, window, "dc1", since_move_s=since_move) is None
    assert s.observe(GID, window, "dc1", since_move_s=61.0) == "dc2"


def test_the_share_must_be_a_majority() -> None:
    with pytest.raises(ValueError, match="share"):
        FollowConfig(node_id=1, share=0.5)


async def write(host_propose: object, stop: asyncio.Event) -> None:
    assert callable(host_propose)
    session = Session()
    while not stop.is_set():
        await host_propose(GID, session, b"w")


@contextlib.asynccontextmanager
async def following(cluster: Cluster, cooldown_s: float) -> AsyncIterator[None]:
    """Every host of `cluster` runs a LeaderFollower (windows of 0.2 s) until the end."""
    config = FollowConfig(
        node_id=1, after_s=0.6, windows=3, min_per_window=3, cooldown_s=cooldown_s
    )
    followers = [
        LeaderFollower(dataclasses.replace(config, node_id=i), host, DC.__getitem__)
        for i, host in cluster.hosts.items()
    ]
    loops = [asyncio.ensure_future(f.run()) for f in followers]
    try:
        yield
    finally:
        for loop_task in loops:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        for f in followers:
            await f.close()


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_leadership_moves_to_the_writing_node_and_stays_under_two_alike(
    cluster: Cluster,
) -> None:
    for node_id in (1, 2, 3):
        await cluster.add(node_id)
    leader = await cluster.start_group(GID, [1, 2, 3])
    writer, other = (i for i in (1, 2, 3) if i != leader)
    stop = asyncio.Event()
    async with following(cluster, cooldown_s=0.0):
        task = asyncio.ensure_future(write(cluster.hosts[writer].propose, stop))
        await until(lambda: cluster.hosts[writer].groups[GID].raw.is_leader(), 30)
        stop.set()
        await task
        await until(lambda: cluster.hosts[leader].counters["leader_moves_followed"] == 1)
        # Two writers alike, neither on the leader's node: leadership stays.
        term = cluster.hosts[writer].groups[GID].raw.term
        stop = asyncio.Event()
        tasks = [
            asyncio.ensure_future(write(cluster.hosts[i].propose, stop)) for i in (leader, other)
        ]
        await asyncio.sleep(10 * 0.6)
        stop.set()
        await asyncio.gather(*tasks)
        assert cluster.hosts[writer].groups[GID].raw.is_leader()
        assert cluster.hosts[writer].groups[GID].raw.term == term
        assert sum(h.counters["leader_moves_followed"] for h in cluster.hosts.values()) == 1


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_an_elected_leader_moves_at_once_and_a_moved_one_waits_the_cooldown(
    cluster: Cluster,
) -> None:
    """A cooldown of two minutes: the elected first leader hands over after the windows
    (the cooldown is for leaders a move brought); the new leader then keeps it while a
    writer in a third data center takes over the writing."""
    for node_id in (1, 2, 3):
        await cluster.add(node_id)
    leader = await cluster.start_group(GID, [1, 2, 3])
    writer, other = (i for i in (1, 2, 3) if i != leader)
    stop = asyncio.Event()
    async with following(cluster, cooldown_s=120.0):
        task = asyncio.ensure_future(write(cluster.hosts[writer].propose, stop))
        await until(lambda: cluster.hosts[writer].groups[GID].raw.is_leader(), 30)
        stop.set()
        await task
        assert cluster.hosts[writer].groups[GID].moved_here
        stop = asyncio.Event()
        task = asyncio.ensure_future(write(cluster.hosts[other].propose, stop))
        await asyncio.sleep(10 * 0.6)
        stop.set()
        await task
        assert cluster.hosts[writer].groups[GID].raw.is_leader()
