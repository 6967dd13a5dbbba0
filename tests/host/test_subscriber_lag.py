"""A subscriber's lag in time (`Feed.lag_seconds`, `copycat_subscriber_lag_seconds`):
0 while it holds everything committed, growing while commits wait for it, 0 again once
it has read them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.host import Session

from .conftest import until

if TYPE_CHECKING:
    from .conftest import Cluster

GID = 0x1A6


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_lag_in_seconds_grows_while_the_subscriber_reads_nothing(cluster: Cluster) -> None:
    host = await cluster.add(1)
    await cluster.start_group(GID, [1])
    feed = host.attach_feed(GID, lambda: b"")
    items = aiter(feed)
    await host.propose(GID, Session(), b"first")
    assert await anext(items) == b"first"
    reading = asyncio.ensure_future(anext(items))  # caught up: waits for the next one
    await asyncio.sleep(0.05)
    assert feed.lag_seconds() == 0.0
    await host.propose(GID, Session(), b"second")
    assert await reading == b"second"
    for i in range(5):  # commits the subscriber does not read
        await host.propose(GID, Session(), b"late %d" % i)
    await asyncio.sleep(0.2)
    assert feed.lag_seconds() >= 0.2 * 0.9
    seen = [await anext(items) for _ in range(5)]
    assert seen == [b"late %d" % i for i in range(5)]
    reading = asyncio.ensure_future(anext(items))
    await until(lambda: feed.lag_seconds() == 0.0, 5)
    reading.cancel()
