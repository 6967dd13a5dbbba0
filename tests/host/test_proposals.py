"""Proposals in the host: a new group's creator campaigns at once, and a proposal that
cannot commit fails with a typed error after `proposal_timeout_s`, leaving nothing
behind."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from copycat.errors import ProposalTimeoutError
from copycat.host import Session

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
