# An in-memory `Gossip` for in-process tests of `Membership`: a seeded lossy network.
#
# What lives here: `FakeNetwork` and `FakeGossip`, which implement the `Gossip` protocol
# with asyncio queues. Membership changes are instant and reliable (failure detection is
# kinship's job, tested with real processes); direct messages are lost with probability
# `loss`, drawn from a seeded generator so a failure replays. Nodes of another cluster name
# or with other keys never see each other; a join sent to one moves the receiver's refused
# counter as kinship 0.4 does (found by experiment: encrypted, a wrong key or cluster name is
# a decrypt failure, the name being bound to the key; otherwise a decode error), and returns
# 0 without naming the peer.
#
# What must not: sockets, threads, kinship.
"""A fake gossip layer: instant membership, lossy direct messages."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from copycat.membership._gossip import (
    GossipEvent,
    GossipEventKind,
    GossipMember,
    GossipState,
    GossipStats,
    PeerGoneError,
    Reachability,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping


class FakeNetwork:
    def __init__(self, *, seed: int = 0, loss: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.nodes: dict[str, FakeGossip] = {}
        self.epochs = 1000
        self.sent = 0
        self.dropped = 0
        self.tamper: object = None  # callable(bytes) -> bytes | None, applied to every message

    @staticmethod
    def compatible(a: FakeGossip, b: FakeGossip) -> bool:
        """Whether `a` and `b` read each other's packets: same cluster, same keys (or none)."""
        if a.cluster != b.cluster or bool(a.keys) != bool(b.keys):
            return False
        return not a.keys or (a.keys[0] in b.keys and b.keys[0] in a.keys)

    def member_of(self, node: FakeGossip) -> GossipMember:
        return GossipMember(
            name=node.name,
            address=node.address,
            state=node.state,
            epoch=node.epoch,
            meta=dict(node.meta),
        )

    def broadcast(self, origin: FakeGossip, kind: GossipEventKind) -> None:
        member = self.member_of(origin)
        for other in self.nodes.values():
            if other is not origin and other.running and self.compatible(origin, other):
                other.queue.put_nowait(GossipEvent(kind=kind, member=member))

    def kill(self, name: str) -> None:
        """The node crashes; every other node declares it dead at once."""
        node = self.nodes[name]
        node.running = False
        node.state = GossipState.DEAD
        self.broadcast(node, GossipEventKind.DEAD)
        node.queue.put_nowait(None)


class FakeGossip:
    def __init__(
        self,
        network: FakeNetwork,
        name: str,
        meta: Mapping[str, str],
        *,
        cluster: str = "copycat",
        keys: list[str] | None = None,
        address: str | None = None,
    ) -> None:
        self.net = network
        self.name = name
        self.meta = dict(meta)
        self.cluster = cluster
        self.address = f"fake:{name}" if address is None else address
        self.decrypt_failures = 0
        self.decode_errors = 0
        network.epochs += 1
        self.epoch = network.epochs
        self.state = GossipState.ALIVE
        self.running = False
        self.queue: asyncio.Queue[GossipEvent | None] = asyncio.Queue()
        self.keys = ["k0"] if keys is None else list(keys)

    async def start(self) -> None:
        old = self.net.nodes.get(self.name)
        if old is not None and old.running:
            raise RuntimeError("name in use")
        if old is not None:
            # A restart: the old run's record leaves, the new run joins.
            old.state = GossipState.LEFT
            self.net.broadcast(old, GossipEventKind.LEFT)
        self.net.nodes[self.name] = self
        self.running = True

    async def join(self, peers: list[str]) -> int:
        for node in self.net.nodes.values():
            if node.address in peers and node.running and not self.net.compatible(self, node):
                if self.keys and node.keys:
                    node.decrypt_failures += 1
                else:
                    node.decode_errors += 1
        self.net.broadcast(self, GossipEventKind.JOINED)
        others = [
            n
            for n in self.net.nodes.values()
            if n is not self and n.running and self.net.compatible(self, n)
        ]
        for other in others:
            self.queue.put_nowait(
                GossipEvent(kind=GossipEventKind.JOINED, member=self.net.member_of(other))
            )
        return len(others)

    async def reachability(self, address: str, timeout_s: float) -> Reachability:
        if address == self.address:
            return Reachability.SELF
        if any(n.address == address and n.running for n in self.net.nodes.values()):
            return Reachability.LISTENING
        return Reachability.SILENT

    def local(self) -> GossipMember:
        return self.net.member_of(self)

    def members(self) -> list[GossipMember]:
        return [
            self.net.member_of(n)
            for n in self.net.nodes.values()
            if n.running and self.net.compatible(self, n)
        ]

    def member(self, name: str) -> GossipMember | None:
        node = self.net.nodes.get(name)
        return None if node is None else self.net.member_of(node)

    async def _events(self) -> AsyncIterator[GossipEvent]:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            yield event

    def events(self) -> AsyncIterator[GossipEvent]:
        return self._events()

    async def set_meta(self, meta: Mapping[str, str]) -> None:
        self.meta = dict(meta)
        self.net.broadcast(self, GossipEventKind.UPDATED)

    async def send(self, name: str, epoch: int, data: bytes) -> None:
        target = self.net.nodes.get(name)
        if target is None or target.epoch != epoch or not target.running:
            raise PeerGoneError(name)
        self.net.sent += 1
        if self.net.rng.random() < self.net.loss:
            self.net.dropped += 1
            return
        if callable(self.net.tamper):
            data = self.net.tamper(data)
        await asyncio.sleep(0)
        target.queue.put_nowait(
            GossipEvent(kind=GossipEventKind.MESSAGE, member=self.net.member_of(self), data=data)
        )

    def inject(self, sender: str, data: bytes) -> None:
        """Delivers `data` to this node as if `sender` had sent it (hostile input)."""
        node = self.net.nodes[sender]
        self.queue.put_nowait(
            GossipEvent(kind=GossipEventKind.MESSAGE, member=self.net.member_of(node), data=data)
        )

    async def install_key(self, key: str | bytes) -> None:
        self.keys.append(str(key))

    async def use_key(self, key: str | bytes) -> None:
        self.keys.remove(str(key))
        self.keys.insert(0, str(key))

    async def remove_key(self, key: str | bytes) -> None:
        self.keys.remove(str(key))

    def key_ids(self) -> list[str]:
        return list(self.keys)

    def stats(self) -> GossipStats:
        return GossipStats(
            decrypt_failures=self.decrypt_failures,
            decode_errors=self.decode_errors,
            replays_dropped=0,
            messages_sent=0,
            messages_received=0,
            messages_dropped=0,
        )

    async def leave(self, timeout_s: float) -> None:
        self.state = GossipState.LEFT
        self.running = False
        self.net.broadcast(self, GossipEventKind.LEFT)

    async def close(self) -> None:
        if self.running:
            self.net.kill(self.name)
        self.running = False
        self.queue.put_nowait(None)
