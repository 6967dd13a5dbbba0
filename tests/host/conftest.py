"""In-process clusters of hosts: real transport endpoints on loopback, memory stores."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest_asyncio

from copycat.host import Feed, Host, HostConfig
from copycat.storage import LogStore, MemoryLogStore
from copycat.transport import Endpoint, FaultHooks, TransportConfig

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


@dataclass
class Cluster:
    hosts: dict[int, Host] = field(default_factory=dict)
    endpoints: dict[int, Endpoint] = field(default_factory=dict)
    stores: dict[int, LogStore] = field(default_factory=dict)
    faults: FaultHooks = field(default_factory=lambda: FaultHooks(seed=7))

    async def add(self, node_id: int, store: LogStore | None = None, **config: object) -> Host:
        ep = Endpoint(
            TransportConfig(node_id=node_id, host="127.0.0.1", port=0), faults=self.faults
        )
        await ep.start()
        for other_id, other in self.endpoints.items():
            ep.add_peer(other_id, *other.address)
            other.add_peer(node_id, *ep.address)
        self.stores[node_id] = store if store is not None else MemoryLogStore()
        host = Host(
            HostConfig(**{"node_id": node_id, "tick_interval_s": 0.02, **config}),  # type: ignore[arg-type]
            self.stores[node_id],
            ep,
        )
        await host.start()
        self.hosts[node_id] = host
        self.endpoints[node_id] = ep
        return host

    async def stop(self, node_id: int) -> None:
        await self.hosts.pop(node_id).close()
        await self.endpoints.pop(node_id).close()

    async def wait_leader(self, gid: int, timeout_s: float = 10.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            for node_id, host in self.hosts.items():
                group = host.groups.get(gid)
                if group is not None and group.raw.is_leader():
                    return node_id
            await asyncio.sleep(0.02)
        raise AssertionError(f"no leader for group {gid} within {timeout_s} s")

    async def start_group(self, gid: int, voters: list[int]) -> int:
        self.hosts[voters[0]].create_group(gid, voters)
        for node_id in voters[1:]:
            self.hosts[node_id].open_member(gid)
        self.hosts[voters[0]].campaign(gid)
        return await self.wait_leader(gid)

    async def close(self) -> None:
        for node_id in list(self.hosts):
            await self.stop(node_id)


async def until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Wait (bounded) until `predicate()` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def consume_into(feed: Feed, state: list[bytes]) -> asyncio.Task[None]:
    """Append every commit of `feed` to `state` in the background (a subscriber that
    never needs a snapshot); cancel the task when done."""

    async def consume() -> None:
        async for item in feed:
            assert isinstance(item, bytes), f"unexpected {item!r}"
            state.append(item)

    return asyncio.ensure_future(consume())


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        await c.close()
