"""Idle groups stop ticking; messages, proposals and failures wake them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.host import Session
from copycat.raft import Message, RequestVoteResponse
from tests.host.conftest import until

if TYPE_CHECKING:
    from .conftest import Cluster

GROUPS = 60


@pytest.mark.asyncio
async def test_idle_groups_quiesce_and_wake(cluster: Cluster) -> None:
    for node_id in (1, 2, 3):
        await cluster.add(node_id)
    for gid in range(1, GROUPS + 1):
        cluster.hosts[1].create_group(gid, [1, 2, 3])
        cluster.hosts[2].open_member(gid)
        cluster.hosts[3].open_member(gid)
        cluster.hosts[1].campaign(gid)

    # init: every group elected a leader and went quiet on every node
    await until(lambda: all(h.quiescent_groups() == GROUPS for h in cluster.hosts.values()))
    ticks_before = {n: h.counters["cycles"] for n, h in cluster.hosts.items()}
    await asyncio.sleep(0.3)  # 15 ticks: nothing happens
    assert all(h.counters["cycles"] == ticks_before[n] for n, h in cluster.hosts.items())

    # act: a proposal through a follower wakes the group on the way
    gid = 7
    leader = await cluster.wait_leader(gid)
    follower = next(n for n in (1, 2, 3) if n != leader)
    await asyncio.wait_for(cluster.hosts[follower].propose(gid, Session(), b"x"), 10)

    # check: it settles again
    await until(lambda: all(h.quiescent_groups() == GROUPS for h in cluster.hosts.values()))

    # act: the leader's node stops; the membership layer reports it failed
    await cluster.stop(leader)
    for host in cluster.hosts.values():
        host.node_failed(leader)

    # check: a new leader is elected among the survivors and commits
    new_leader = await cluster.wait_leader(gid)
    assert new_leader != leader
    await asyncio.wait_for(cluster.hosts[new_leader].propose(gid, Session(), b"y"), 10)


async def idle_group_of_three(cluster: Cluster, gid: int) -> tuple[int, int, int]:
    """Group `gid` on nodes 1-3, quiescent everywhere: (leader, one follower, the other)."""
    for node_id in (1, 2, 3):
        await cluster.add(node_id)
    leader = await cluster.start_group(gid, [1, 2, 3])
    await until(lambda: all(h.quiescent_groups() == 1 for h in cluster.hosts.values()))
    proposer, other = (n for n in (1, 2, 3) if n != leader)
    return leader, proposer, other


@pytest.mark.asyncio
async def test_a_quiescent_follower_grants_the_first_vote_once_its_leader_died_unreported(
    cluster: Cluster,
) -> None:
    # init: one idle group of three, quiescent everywhere for longer than an election
    # timeout; what the follower that will not propose answers to votes is recorded
    gid = 11
    leader, proposer, other = await idle_group_of_three(cluster, gid)
    await asyncio.sleep(0.5)  # 25 ticks of 0.02 s; the election timeout is 10
    answers: list[bool] = []
    endpoint = cluster.endpoints[other]
    send = endpoint.send

    def recording_send(group: int, message: Message) -> None:
        if isinstance(message, RequestVoteResponse):
            answers.append(not message.reject)
        send(group, message)

    endpoint.send = recording_send  # type: ignore[method-assign]

    # act: the leader's node dies and gossip has not noticed (nothing reports it failed);
    # a proposal on one follower makes it tick and campaign, while the other follower,
    # quiescent, is woken only by its vote requests
    await cluster.stop(leader)
    await asyncio.wait_for(cluster.hosts[proposer].propose(gid, Session(), b"after"), 10)

    # check: the woken follower counted its quiet time as silence from the leader and
    # granted the very first (pre-)vote; it used to judge the dead leader's lease by the
    # moment it stopped ticking, refuse, and go quiet again, round after round
    assert answers[:2] == [True, True], answers  # the pre-vote, then the vote
    assert await cluster.wait_leader(gid) == proposer


@pytest.mark.asyncio
async def test_a_quiescent_group_elects_again_when_its_leader_dies_unreported(
    cluster: Cluster,
) -> None:
    # init: one idle group of three, quiescent everywhere
    gid = 11
    leader, proposer, other = await idle_group_of_three(cluster, gid)

    # act: the leader's node dies and gossip has not noticed (nothing reports it failed);
    # a proposal on one follower makes that follower tick and campaign, while the other
    # follower, quiescent, is woken only by its (pre-)vote requests
    await cluster.stop(leader)
    done = asyncio.ensure_future(cluster.hosts[proposer].propose(gid, Session(), b"after"))

    # check: the woken follower counts its quiet time, grants, and the proposal commits
    # (before: it judged the dead leader's lease fresh, rejected, and went quiet again,
    # so the group waited for gossip's suspicion)
    await asyncio.wait_for(done, 10)
    new_leader = await cluster.wait_leader(gid)
    assert new_leader in (proposer, other)
