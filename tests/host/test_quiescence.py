"""Idle groups stop ticking; messages, proposals and failures wake them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.host import Session
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
