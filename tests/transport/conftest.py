"""Helpers for transport tests: endpoints on 127.0.0.1 with ephemeral ports, a message
collector that waits with a bounded timeout, and raw-socket clients for hostile input.

Every wait here is bounded (timeouts are safety nets, never assertions on speed)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import pytest

from copycat.raft import AppendEntries, Entry, Message
from copycat.transport import DevCerts, Endpoint, TransportConfig, make_dev_certs
from copycat.transport._codec import encode_handshake_body
from copycat.transport._frames import PROTOCOL_VERSION, handshake_bytes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

WAIT_S = 10.0
"""Upper bound of any single wait in these tests."""


class Collector:
    """Collects (peer, group, message) triples; `wait(n)` waits for n of them."""

    def __init__(self) -> None:
        # Any: tests read fields of the concrete message types they sent.
        self.items: list[tuple[int, int, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, peer: int, batch: list[tuple[int, Message]]) -> None:
        self.items.extend((peer, g, m) for g, m in batch)
        self._changed.set()

    async def wait(self, n: int, timeout_s: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()


def config(node_id: int, **overrides: Any) -> TransportConfig:
    return TransportConfig(node_id=node_id, cluster_name="test", **overrides)


def append(sender: int, to: int, i: int, data: bytes = b"payload") -> AppendEntries:
    return AppendEntries(
        term=1,
        sender=sender,
        to=to,
        prev_index=i,
        prev_term=1,
        entries=(Entry(term=1, index=i + 1, data=data),),
        commit=i,
    )


@contextlib.asynccontextmanager
async def endpoints(*configs: TransportConfig, **kwargs: Any) -> AsyncIterator[list[Endpoint]]:
    """Start one endpoint per config, tell each about all others, close them all after."""
    eps = [Endpoint(cfg, **kwargs) for cfg in configs]
    try:
        for ep in eps:
            await ep.start()
        for ep in eps:
            for other in eps:
                if other is not ep:
                    ep.add_peer(other.node_id, *other.address)
        yield eps
    finally:
        for ep in eps:
            await ep.close()


async def eventually(predicate: Any, timeout_s: float = WAIT_S) -> None:
    """Poll `predicate()` every 10 ms until it is true (bounded)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (counters have no event to wait on)
            await asyncio.sleep(0.01)


def hello(
    node_id: int, cluster: str = "test", version: int = PROTOCOL_VERSION, peer: int = 0
) -> bytes:
    body = {
        "cluster": cluster,
        "node": node_id,
        "peer": peer,
        "compression": [],
        "max_frame": 16 << 20,
    }
    return handshake_bytes(version, encode_handshake_body(body))


async def read_until_closed(reader: asyncio.StreamReader, timeout_s: float = WAIT_S) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    data = b""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return make_dev_certs(tmp_path_factory.mktemp("certs"), [1, 2, 3])


@pytest.fixture(scope="session")
def rogue_certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    """Certificates signed by another CA than `certs`."""
    return make_dev_certs(tmp_path_factory.mktemp("rogue"), [1, 2, 3], ca_name="Rogue CA")
