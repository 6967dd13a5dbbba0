"""A node that restarts serves its single-voter groups at once: the only voter of a
group campaigns when the group opens instead of waiting out an election timeout (with
10,000 groups that wait, and the elections all timing out together, delayed serving by
seconds). A group with other voters still waits for its timer. Ticks are 60 s apart
here, so nothing but the rule under test can start an election."""

from __future__ import annotations

import pytest

from .conftest import Cluster, until

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

NO_TICKS = {"tick_interval_s": 60.0}


async def test_the_only_voter_campaigns_when_its_group_opens(cluster: Cluster) -> None:
    host = await cluster.add(1, **NO_TICKS)
    host.create_group(5, [1])
    host.campaign(5)
    await cluster.wait_leader(5)
    store = cluster.stores[1]
    await cluster.stop(1)

    again = await cluster.add(1, store=store, **NO_TICKS)
    await until(lambda: again.groups[5].raw.is_leader(), timeout_s=10)


async def test_a_member_with_other_voters_waits_for_its_election_timer(
    cluster: Cluster,
) -> None:
    for node_id in (1, 2, 3):
        await cluster.add(node_id, **NO_TICKS)
    await cluster.start_group(6, [1, 2, 3])
    store = cluster.stores[1]
    for node_id in (1, 2, 3):
        await cluster.stop(node_id)

    again = await cluster.add(1, store=store, **NO_TICKS)
    for _ in range(20):
        await until(lambda: True)  # let cycles run
    assert not again.groups[6].raw.is_leader()
    assert again.groups[6].raw.role.name == "FOLLOWER"
