"""Races between starting a group and joining it: a subscriber's empty member opened just
before its node is asked to create the group, and a late learner request for a node the
group already has as a voter."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from copycat.errors import NotLeaderError
from copycat.host import Session

if TYPE_CHECKING:
    from .conftest import Cluster

GID = 0xBEEF


@pytest.mark.asyncio
async def test_create_group_bootstraps_a_blank_member_opened_before(cluster: Cluster) -> None:
    for node_id in (1, 2, 3):
        await cluster.add(node_id)
    # arrange: node 1 opened an empty member (a subscriber joining), then is made creator
    for host in cluster.hosts.values():
        host.open_member(GID)
    assert cluster.hosts[1].is_blank(GID)

    # act
    cluster.hosts[1].create_group(GID, [1, 2, 3])
    cluster.hosts[1].campaign(GID)
    leader = await cluster.wait_leader(GID)
    await cluster.hosts[leader].propose(GID, Session(), b"x")

    # check: one group of three voters, the blank members filled by the leader
    assert not cluster.hosts[1].is_blank(GID)
    for host in cluster.hosts.values():
        assert host.groups[GID].raw.conf_state().voters == {1, 2, 3}


@pytest.mark.asyncio
async def test_create_group_refuses_a_member_with_state(cluster: Cluster) -> None:
    for node_id in (1, 2):
        await cluster.add(node_id)
    await cluster.start_group(GID, [1, 2])
    with pytest.raises(ValueError, match="already exists"):
        cluster.hosts[2].create_group(GID, [1, 2])


@pytest.mark.asyncio
async def test_learner_request_for_a_voter_does_not_demote_it(cluster: Cluster) -> None:
    for node_id in (1, 2, 3):
        await cluster.add(node_id)
    leader = await cluster.start_group(GID, [1, 2, 3])
    other = next(n for n in (1, 2, 3) if n != leader)

    await cluster.hosts[leader].add_member(GID, other, voter=False)

    conf = cluster.hosts[leader].groups[GID].raw.conf_state()
    assert conf.voters == {1, 2, 3}
    assert not conf.learners


@pytest.mark.asyncio
async def test_a_new_learner_is_caught_up_before_promotion(cluster: Cluster) -> None:
    for node_id in (1, 2, 3, 4):
        await cluster.add(node_id)
    leader = await cluster.start_group(GID, [1, 2, 3])
    for i in range(20):
        await cluster.hosts[leader].propose(GID, Session(), b"%d" % i)
    follower = next(n for n in (1, 2, 3) if n != leader)
    cluster.hosts[4].open_member(GID)
    await cluster.hosts[leader].add_member(GID, 4, voter=False)

    with pytest.raises(NotLeaderError):
        await cluster.hosts[follower].wait_caught_up(GID, 4)
    await cluster.hosts[leader].wait_caught_up(GID, 4)

    assert cluster.hosts[4].groups[GID].raw.last_index() >= (
        cluster.hosts[leader].groups[GID].raw.commit_index()
    )
