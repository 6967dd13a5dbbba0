"""A group over three in-process hosts: election, proposals from every member, one
order everywhere, exactly once."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat import LOAD_SNAPSHOT
from copycat.host import Session

if TYPE_CHECKING:
    from .conftest import Cluster

GID = 0xC0FFEE


async def _collect(feed, count: int, timeout_s: float = 10.0) -> list[bytes]:
    out: list[bytes] = []

    async def run() -> None:
        async for item in feed:
            assert item is not LOAD_SNAPSHOT
            out.append(item)
            if len(out) == count:
                return

    await asyncio.wait_for(run(), timeout_s)
    return out


@pytest.mark.asyncio
async def test_three_hosts_commit_in_one_order(cluster: Cluster) -> None:
    for node_id in (1, 2, 3):
        await cluster.add(node_id)
    cluster.hosts[1].create_group(GID, [1, 2, 3])
    cluster.hosts[2].open_member(GID)
    cluster.hosts[3].open_member(GID)
    cluster.hosts[1].campaign(GID)
    await cluster.wait_leader(GID)
    feeds = {n: h.attach_feed(GID, lambda: b"") for n, h in cluster.hosts.items()}
    sessions = {n: Session() for n in cluster.hosts}

    async def proposer(node_id: int) -> None:
        for i in range(20):
            await cluster.hosts[node_id].propose(GID, sessions[node_id], b"%d-%d" % (node_id, i))

    await asyncio.wait_for(asyncio.gather(*(proposer(n) for n in (1, 2, 3))), 20)
    seen = {n: await _collect(f, 60) for n, f in feeds.items()}
    assert seen[1] == seen[2] == seen[3]
    assert sorted(seen[1]) == sorted(b"%d-%d" % (n, i) for n in (1, 2, 3) for i in range(20))
