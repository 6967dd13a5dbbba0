"""Host methods behind top-up and graceful leave: the per-group metadata record (the
replica rule lives there), leader transfer, and a voter handed over to a newcomer."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.errors import NotLeaderError
from copycat.host import Session

from .conftest import until

if TYPE_CHECKING:
    from .conftest import Cluster

GID = 0xBEEF


@pytest.mark.asyncio
async def test_group_meta_is_written_once_and_survives_a_restart(cluster: Cluster) -> None:
    for node_id in (1, 2):
        await cluster.add(node_id)
    cluster.hosts[1].create_group(GID, [1, 2], meta=b"rule-a")
    cluster.hosts[2].open_member(GID, meta=b"rule-a")
    cluster.hosts[1].campaign(GID)
    await cluster.wait_leader(GID)
    assert cluster.hosts[1].group_meta(GID) == b"rule-a"
    assert cluster.hosts[2].group_meta(GID) == b"rule-a"
    cluster.hosts[2].open_member(GID, meta=b"rule-b")  # immutable: the first one stays
    assert cluster.hosts[2].group_meta(GID) == b"rule-a"

    store = cluster.stores[2]
    await cluster.stop(2)
    host = await cluster.add(2, store=store)
    assert host.group_meta(GID) == b"rule-a"

    host.drop_group(GID)
    assert store.group(GID).meta() is None


@pytest.mark.asyncio
async def test_a_member_without_meta_reports_none(cluster: Cluster) -> None:
    await cluster.add(1)
    cluster.hosts[1].open_member(GID)
    assert cluster.hosts[1].group_meta(GID) is None
    cluster.hosts[1].open_member(GID, meta=b"late")  # e.g. a learner promoted by repair
    assert cluster.hosts[1].group_meta(GID) == b"late"


@pytest.mark.asyncio
async def test_transfer_leader_moves_leadership_and_commits_go_on(cluster: Cluster) -> None:
    for node_id in (1, 2, 3):
        await cluster.add(node_id)
    leader = await cluster.start_group(GID, [1, 2, 3])
    host = cluster.hosts[leader]
    follower = next(n for n in (1, 2, 3) if n != leader)
    with pytest.raises(NotLeaderError):
        await cluster.hosts[follower].transfer_leader(GID, leader)
    with pytest.raises(ValueError, match="not another voter"):
        await host.transfer_leader(GID, 99)
    with pytest.raises(ValueError, match="not another voter"):
        await host.transfer_leader(GID, leader)

    await asyncio.wait_for(host.transfer_leader(GID, follower), 10)

    assert not host.groups[GID].raw.is_leader()
    assert await cluster.wait_leader(GID) == follower
    await asyncio.wait_for(cluster.hosts[follower].propose(GID, Session(), b"after"), 10)


@pytest.mark.asyncio
async def test_a_leader_hands_its_place_over_and_the_group_keeps_committing(
    cluster: Cluster,
) -> None:
    """What a graceful leave does on a group the leaving node leads: the newcomer joins
    as a learner, is promoted, leadership moves, and the new leader removes the leaver."""
    for node_id in (1, 2, 3, 4):
        await cluster.add(node_id)
    leader = await cluster.start_group(GID, [1, 2, 3])
    leaving = cluster.hosts[leader]
    await asyncio.wait_for(leaving.propose(GID, Session(), b"before"), 10)

    cluster.hosts[4].open_member(GID)
    await leaving.add_member(GID, 4, voter=False)
    await until(lambda: cluster.hosts[4].groups[GID].applied >= leaving.groups[GID].applied)
    await leaving.add_member(GID, 4, voter=True)
    await asyncio.wait_for(leaving.transfer_leader(GID, 4), 10)
    new_leader = cluster.hosts[await cluster.wait_leader(GID)]
    await new_leader.remove_member(GID, leader)

    voters = new_leader.groups[GID].raw.conf_state().voters
    assert leader not in voters
    assert len(voters) == 3
    await asyncio.wait_for(new_leader.propose(GID, Session(), b"after"), 10)
