# The simulator's gossip: SWIM as its peers see it, behind the `Gossip` protocol.
#
# What lives here: `GossipNet`, every node's view of every other, moved by one driver
# that probes each pair once per `probe_interval_s`: a probe needs a round trip on the
# simulated network; a failed probe makes an alive member suspect, a member suspect for
# `suspicion_s` dead, and a good probe brings it back (false suspicions are drawn from
# the seeded generator). Joins, leaves, metadata and direct messages travel with the
# network's delay and are lost on a cut link.
#
# What must not: sockets, threads, the wall clock, the global random. kinship itself
# (its thread, UDP, encryption) is tested with real processes in tests/membership.
"""`GossipNet` and `SimGossip`: simulated SWIM membership."""

from __future__ import annotations

import asyncio
import contextvars
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
    import random
    from collections.abc import AsyncIterator, Callable, Mapping

    from copycat.membership import MembershipConfig


class GossipNet:
    """The gossip layer of every simulated node."""

    def __init__(
        self,
        rng: random.Random,
        *,
        reachable: Callable[[str, str], bool],
        delay: Callable[[str, str], float],
        probe_interval_s: float = 1.0,
        suspicion_s: float = 5.0,
        false_suspicion_p: float = 0.0,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.rng = rng
        self.reachable = reachable
        self.delay = delay
        self.probe_interval_s = probe_interval_s
        self.suspicion_s = suspicion_s
        self.false_suspicion_p = false_suspicion_p
        self._trace = trace
        self.runs: dict[str, SimGossip] = {}
        self._epochs = 0
        self._driver: asyncio.Task[None] | None = None
        self.suspicions = 0
        self.false_suspicions = 0
        self.deaths = 0
        self.messages = 0

    def gossip(
        self, name: str, address: str
    ) -> Callable[[MembershipConfig, Mapping[str, str]], SimGossip]:
        def build(_config: MembershipConfig, meta: Mapping[str, str]) -> SimGossip:
            self._epochs += 1
            return SimGossip(self, name, address, self._epochs, meta)

        return build

    def trace(self, line: str) -> None:
        if self._trace is not None:
            self._trace(line)

    def crash(self, name: str) -> None:
        run = self.runs.get(name)
        if run is not None:
            run.running = False
            run.queue.put_nowait(None)

    def both_ways(self, a: str, b: str) -> bool:
        return self.reachable(a, b) and self.reachable(b, a)

    def start_driver(self) -> None:
        if self._driver is None:
            # In no process's context: the driver is the network, and outlives every run.
            self._driver = asyncio.get_running_loop().create_task(
                self._drive(), context=contextvars.Context()
            )

    async def _drive(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            now = asyncio.get_running_loop().time()
            for observer in list(self.runs.values()):
                if not observer.running:
                    continue
                for name, view in list(observer.view.items()):
                    target = self.runs.get(name)
                    live = target is not None and target.running and target.epoch == view.epoch
                    ok = live and self.both_ways(observer.name, name)
                    if ok and self.rng.random() < self.false_suspicion_p:
                        ok = False
                        self.false_suspicions += 1
                    observer.probed(name, ok, now)
                    if ok and target is not None:
                        observer.merge(target)


class _View:
    __slots__ = ("epoch", "meta", "since", "state")

    def __init__(self, member: GossipMember, now: float) -> None:
        self.epoch = member.epoch
        self.meta = dict(member.meta)
        self.state = GossipState.ALIVE
        self.since = now


class SimGossip:
    """One run of one node's gossip layer."""

    def __init__(
        self, net: GossipNet, name: str, address: str, epoch: int, meta: Mapping[str, str]
    ) -> None:
        self.net = net
        self.name = name
        self.address = address
        self.epoch = epoch
        self.meta = dict(meta)
        self.running = False
        self.queue: asyncio.Queue[GossipEvent | None] = asyncio.Queue()
        self.view: dict[str, _View] = {}
        self.keys = ["k0"]

    def me(self) -> GossipMember:
        return GossipMember(
            name=self.name, address=self.address, state=GossipState.ALIVE, epoch=self.epoch,
            meta=dict(self.meta),
        )  # fmt: skip

    def _member(self, name: str, view: _View) -> GossipMember:
        run = self.net.runs.get(name)
        address = run.address if run is not None else ""
        return GossipMember(
            name=name, address=address, state=view.state, epoch=view.epoch, meta=dict(view.meta)
        )

    def _emit(self, kind: GossipEventKind, name: str, view: _View) -> None:
        if self.running:
            self.queue.put_nowait(GossipEvent(kind=kind, member=self._member(name, view)))

    def learn(self, member: GossipMember) -> None:
        """`member` is alive (a join, or a good probe of a new run)."""
        if member.name == self.name or not self.running:
            return
        now = asyncio.get_running_loop().time()
        old = self.view.get(member.name)
        if old is not None and old.epoch == member.epoch:
            if old.state is not GossipState.ALIVE:
                was = old.state
                old.state = GossipState.ALIVE
                self.net.trace(f"gossip {self.name} sees {member.name} alive again")
                kind = (
                    GossipEventKind.RECOVERED
                    if was is GossipState.SUSPECT
                    else GossipEventKind.JOINED
                )
                self._emit(kind, member.name, old)
            return
        if old is not None and old.epoch > member.epoch:
            return
        if old is not None and old.state in (GossipState.ALIVE, GossipState.SUSPECT):
            old.state = GossipState.LEFT
            self._emit(GossipEventKind.LEFT, member.name, old)
        view = _View(member, now)
        self.view[member.name] = view
        self.net.trace(f"gossip {self.name} sees {member.name} join (epoch {member.epoch})")
        self._emit(GossipEventKind.JOINED, member.name, view)

    def merge(self, peer: SimGossip) -> None:
        """Push-pull with `peer` after a good probe: learn the runs it knows alive that
        this run does not know yet, so membership spreads as SWIM's gossip spreads it."""
        for name, view in list(peer.view.items()):
            mine = self.view.get(name)
            if name == self.name or view.state is not GossipState.ALIVE:
                continue
            if mine is None or mine.epoch < view.epoch:
                self.learn(peer._member(name, view))

    def probed(self, name: str, ok: bool, now: float) -> None:
        view = self.view[name]
        if view.state in (GossipState.LEFT,):
            return
        target = self.net.runs.get(name)
        if ok:
            if target is not None and target.meta != view.meta:
                view.meta = dict(target.meta)
                if view.state is GossipState.ALIVE:
                    self._emit(GossipEventKind.UPDATED, name, view)
            if view.state is GossipState.SUSPECT:
                view.state = GossipState.ALIVE
                self.net.trace(f"gossip {self.name} sees {name} recover")
                self._emit(GossipEventKind.RECOVERED, name, view)
            elif view.state is GossipState.DEAD:
                view.state = GossipState.ALIVE
                self.net.trace(f"gossip {self.name} sees {name} back")
                self._emit(GossipEventKind.JOINED, name, view)
            return
        if view.state is GossipState.ALIVE:
            view.state = GossipState.SUSPECT
            view.since = now
            self.net.suspicions += 1
            self.net.trace(f"gossip {self.name} suspects {name}")
            self._emit(GossipEventKind.SUSPECT, name, view)
        elif view.state is GossipState.SUSPECT and now - view.since >= self.net.suspicion_s:
            view.state = GossipState.DEAD
            self.net.deaths += 1
            self.net.trace(f"gossip {self.name} declares {name} dead")
            self._emit(GossipEventKind.DEAD, name, view)

    # -- the Gossip protocol ------------------------------------------------------------

    async def start(self) -> None:
        self.running = True
        self.net.runs[self.name] = self
        self.net.start_driver()

    async def join(self, peers: list[str]) -> int:
        answered = [
            run
            for run in self.net.runs.values()
            if run is not self and run.running and run.address in peers
            and self.net.both_ways(self.name, run.name)
        ]  # fmt: skip
        if not answered:
            return 0
        await asyncio.sleep(2 * self.net.delay(self.name, answered[0].name))
        known = {run.name: run for run in self.net.runs.values() if run.running and run is not self}
        for name, run in known.items():
            if self.net.both_ways(self.name, name) or any(
                name in a.view or a is run for a in answered
            ):
                self.learn(run.me())
                run.learn(self.me())
        return len(answered)

    async def reachability(self, address: str, timeout_s: float) -> Reachability:
        if address == self.address:
            return Reachability.SELF
        for run in self.net.runs.values():
            if run.address == address and run.running and self.net.both_ways(self.name, run.name):
                return Reachability.LISTENING
        return Reachability.SILENT

    def local(self) -> GossipMember:
        return self.me()

    def members(self) -> list[GossipMember]:
        out = [self.me()]
        for name, view in self.view.items():
            if view.state in (GossipState.ALIVE, GossipState.SUSPECT):
                out.append(self._member(name, view))
        return out

    def member(self, name: str) -> GossipMember | None:
        if name == self.name:
            return self.me()
        view = self.view.get(name)
        return None if view is None else self._member(name, view)

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
        loop = asyncio.get_running_loop()
        for run in list(self.net.runs.values()):
            view = run.view.get(self.name)
            if run is self or view is None or view.epoch != self.epoch:
                continue
            if self.net.reachable(self.name, run.name):
                loop.call_later(
                    self.net.delay(self.name, run.name),
                    run._meta_arrives,
                    self.name,
                    self.epoch,
                    dict(meta),
                )

    def _meta_arrives(self, name: str, epoch: int, meta: dict[str, str]) -> None:
        view = self.view.get(name)
        if view is not None and view.epoch == epoch and view.meta != meta:
            view.meta = meta
            if view.state is GossipState.ALIVE:
                self._emit(GossipEventKind.UPDATED, name, view)

    async def send(self, name: str, epoch: int, data: bytes) -> None:
        view = self.view.get(name)
        if (
            view is None
            or view.epoch != epoch
            or view.state not in (GossipState.ALIVE, GossipState.SUSPECT)
        ):
            raise PeerGoneError(name)
        target = self.net.runs.get(name)
        self.net.messages += 1
        if target is None or not target.running or not self.net.reachable(self.name, name):
            return
        event = GossipEvent(kind=GossipEventKind.MESSAGE, member=self.me(), data=bytes(data))
        asyncio.get_running_loop().call_later(
            self.net.delay(self.name, name), target._arrive, epoch, event
        )

    def _arrive(self, epoch: int, event: GossipEvent) -> None:
        if self.running and self.epoch == epoch:
            self.queue.put_nowait(event)

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
            decrypt_failures=0, decode_errors=0, replays_dropped=0, messages_sent=0,
            messages_received=0, messages_dropped=0,
        )  # fmt: skip

    async def leave(self, timeout_s: float) -> None:
        for run in list(self.net.runs.values()):
            view = run.view.get(self.name)
            current = view is not None and view.epoch == self.epoch
            if run is not self and current and self.net.reachable(self.name, run.name):
                assert view is not None
                view.state = GossipState.LEFT
                run._emit(GossipEventKind.LEFT, self.name, view)
        self.running = False

    async def close(self) -> None:
        self.running = False
        self.queue.put_nowait(None)
