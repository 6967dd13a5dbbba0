"""Proposals in the host: a new group's creator campaigns at once, and a proposal that
cannot commit fails with a typed error after `proposal_timeout_s`, leaving nothing
behind."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.errors import ProposalTimeoutError
from copycat.host import Session

from .conftest import consume_into, until

if TYPE_CHECKING:
    from .conftest import Cluster

GID = 0xFACE


@pytest.mark.asyncio
async def test_creator_campaigns_before_any_tick(cluster: Cluster) -> None:
    """Ticks an hour apart: only the campaign asked right after `create_group` (before
    the bootstrap configuration is applied) can elect a leader."""
    for node_id in (1, 2, 3):
        await cluster.add(node_id, tick_interval_s=3600.0)
    leader = await cluster.start_group(GID, [1, 2, 3])
    assert leader == 1
    await cluster.hosts[2].propose(GID, Session(), b"first")
    assert cluster.hosts[1].groups[GID].applied >= 5  # bootstrap, no-op, the proposal


@pytest.mark.asyncio
async def test_a_proposal_without_a_leader_times_out_typed(cluster: Cluster) -> None:
    host = await cluster.add(1, proposal_retry_s=0.05, proposal_timeout_s=0.3)
    host.open_member(GID)  # a member that never hears from a leader
    session = Session()

    with pytest.raises(ProposalTimeoutError, match="not seen committed"):
        await host.propose(GID, session, b"lost")

    group = host.groups[GID]
    assert not group.waiters
    assert not session.in_flight
    assert group.retry_timer is None  # the retry heap ran dry: no timer left behind


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_waiting_proposals_go_to_a_new_leader_at_once(cluster: Cluster) -> None:
    """A proposal forwarded to a leader that is then cut off is lost with it; once a
    new leader shows, the proposer resends it at once, not after `proposal_retry_s`
    (two minutes here: the wait below gives up long before), and it applies once."""
    for node_id in (1, 2, 3):
        await cluster.add(node_id, proposal_retry_s=120.0, proposal_timeout_s=240.0)
    old = await cluster.start_group(GID, [1, 2, 3])
    proposer = next(i for i in (1, 2, 3) if i != old)
    host = cluster.hosts[proposer]
    await host.propose(GID, Session(), b"before")  # the proposer knows the old leader
    for other in (1, 2, 3):
        if other != old:
            cluster.faults.cut(old, other)
    session = Session()
    async with asyncio.timeout(30):
        await host.propose(GID, session, b"after")
    assert host.groups[GID].raw.leader_id not in (0, old)
    assert host.counters["proposals_resent_new_leader"] >= 1
    state: list[bytes] = []
    consumer = consume_into(host.attach_feed(GID, lambda: b""), state)
    try:
        await until(lambda: b"after" in state)
        assert state.count(b"after") == 1
        assert state.count(b"before") == 1
    finally:
        consumer.cancel()


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_elections_and_leader_changes_are_counted(cluster: Cluster) -> None:
    for node_id in (1, 2, 3):
        await cluster.add(node_id)
    old = await cluster.start_group(GID, [1, 2, 3])
    assert cluster.hosts[old].counters["elections_started"] == 1  # the creator's campaign
    for other in (1, 2, 3):
        if other != old:
            cluster.faults.cut(old, other)
    survivors = [i for i in (1, 2, 3) if i != old]
    async with asyncio.timeout(30):  # a proposal wakes the idle group; it commits after
        await cluster.hosts[survivors[0]].propose(GID, Session(), b"wakes it")
    assert any(cluster.hosts[i].groups[GID].raw.is_leader() for i in survivors)
    assert sum(cluster.hosts[i].counters["elections_started"] for i in survivors) >= 1
    assert all(cluster.hosts[i].counters["leader_changes"] >= 1 for i in survivors)
