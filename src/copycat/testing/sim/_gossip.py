# The simulator's gossip layer: SWIM membership as the peers of a node see it, behind the
# `Gossip` protocol, on the simulated network and the virtual clock.
#
# What lives here: `GossipNet` (every run of every node, the packets in flight, and one
# driver that probes every pair of runs that know each other once per `probe_interval_s`)
# and `SimGossip` (one run: its view of the others, its event subscriptions). What SWIM
# decides is mirrored from kinship 0.4 (docs and `kinship/_types.py`): a probe needs a
# round trip; a failed one makes an alive member SUSPECT, a member suspect for
# `suspicion_s` DEAD; a good one makes a suspect RECOVERED and a dead one JOINED again
# (kinship's `MemberJoined` is "alive that was unknown, dead or left": a healed partition
# reads as a join, the dead side having refuted its death); a clean leave is LEFT; a run
# restarted under the same name is LEFT for the old run then JOINED for the new epoch
# (JOINED alone where the old run was already dead or left). A good probe also pulls the
# target's alive members (push-pull), so membership spreads as SWIM's gossip spreads it.
# Notices (joins, leaves, metadata) and direct messages travel with the network's delay;
# notices keep their order per link, messages do not (UDP); all are lost on a cut link.
#
# What must not: sockets, threads, the wall clock, the global random, or iteration over an
# unordered container. Every random choice comes from the `random.Random` given to the
# net; packets are timed on the running loop's clock and delivered in (time, sequence)
# order, outside every simulated process, so a crashed or paused sender does not hold its
# packets in flight. kinship itself (its thread, UDP, encryption) is tested with real
# processes in tests/membership.
"""`GossipNet` and `SimGossip`: simulated SWIM membership for the whole-cluster simulator."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import heapq
import math
from typing import TYPE_CHECKING, Final, final

from copycat.errors import BrokenError
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

    from copycat.membership._config import MembershipConfig
    from copycat.membership._gossip import Gossip

_LIVE: Final = (GossipState.ALIVE, GossipState.SUSPECT)
_EPSILON_S: Final = 1e-9
"""Slack on the suspicion timeout, so that float sums of probe intervals do not cost a
round (`4 * 0.05` is not always `>= 0.2`)."""


class _Seen:
    """What one observer holds about one run of another node."""

    __slots__ = ("meta", "run", "since", "state", "version")

    def __init__(self, run: SimGossip, version: int, meta: Mapping[str, str]) -> None:
        self.run = run
        self.state = GossipState.ALIVE
        self.since = 0.0
        """When the current suspicion started (meaningful while SUSPECT)."""
        self.version = version
        """The run's metadata version (its incarnation) this observer has seen."""
        self.meta = dict(meta)


@final
class GossipNet:
    """The gossip layer of every simulated node: runs, packets in flight, the probe driver.

    `reachable(a, b)`: whether a packet from node name `a` reaches node name `b` now (the
    simulator's partitions, possibly one way). `delay(a, b)`: the one-way delay of a packet
    sent now, in seconds. `false_suspicion_p`: the probability that a probe which would
    succeed is taken as failed. `trace(line)` is told of every change of state in any view
    (joins, suspicions, deaths, leaves; not metadata updates) and of starts, crashes, leaves."""

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
        if not (math.isfinite(probe_interval_s) and probe_interval_s > 0):
            raise ValueError("probe_interval_s must be a finite number of seconds above 0")
        if not (math.isfinite(suspicion_s) and suspicion_s >= 0):
            raise ValueError("suspicion_s must be a finite number of seconds, at least 0")
        self.rng = rng
        self.reachable = reachable
        self.delay = delay
        self.probe_interval_s = probe_interval_s
        self.suspicion_s = suspicion_s
        self.false_suspicion_p = false_suspicion_p
        self._trace = trace
        self.suspicions = 0
        """SUSPECT events emitted (one per observer that suspects)."""
        self.false_suspicions = 0
        """Of those, the ones raised by a probe that would have succeeded."""
        self.deaths = 0
        """DEAD events emitted (one per observer that declares a death)."""
        self.messages = 0
        """Direct messages accepted by `send()` (delivered or lost)."""
        self._runs: dict[str, SimGossip] = {}
        """The newest run of every name that ever started (live or not)."""
        self._epochs = 0
        self._driver: asyncio.Task[None] | None = None
        self._closed = False
        # Packets in flight: (arrival, sequence, delivery), one timer for the earliest.
        self._in_flight: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._link_clock: dict[tuple[str, str], float] = {}
        """The latest arrival time of a notice on each link, to keep notices in order."""

    # -- for the simulator ----------------------------------------------------------------

    def gossip(
        self, name: str, address: str
    ) -> Callable[[MembershipConfig, Mapping[str, str]], SimGossip]:
        """A `gossip_factory` for `Membership`: it builds a `SimGossip` named `name` (which
        must be the config's gossip name) listening at `address`."""

        def build(config: MembershipConfig, meta: Mapping[str, str]) -> SimGossip:
            if config.gossip_name != name:
                raise ValueError(
                    f"gossip name {name!r} differs from the config's {config.gossip_name!r}: "
                    "Membership would ignore the member"
                )
            return SimGossip(self, name, address, meta)

        return build

    def crash(self, name: str) -> None:
        """The current run of `name` vanishes without a word: it stops answering, its event
        streams end, and the others find out by probing (SUSPECT, then DEAD)."""
        run = self._runs.get(name)
        if run is not None and run.running:
            self.trace(f"gossip {run.name}@{run.epoch} crashes")
            run._stop()

    def run(self, name: str) -> SimGossip | None:
        """The newest run of `name` (live or not), or None if none ever started."""
        return self._runs.get(name)

    def live(self) -> list[SimGossip]:
        """The live runs, by name."""
        return [run for _, run in sorted(self._runs.items()) if run.running]

    async def close(self) -> None:
        """Ends the simulation's gossip: every live run vanishes (as in `crash`), packets in
        flight are dropped and the driver stops. Nothing can start afterwards."""
        self._closed = True
        for run in self.live():
            run._stop()
        self._in_flight.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
        driver, self._driver = self._driver, None
        if driver is not None and not driver.done():
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver

    def trace(self, line: str) -> None:
        if self._trace is not None:
            self._trace(line)

    # -- internals: the network -----------------------------------------------------------

    def both_ways(self, a: str, b: str) -> bool:
        """Whether a round trip between `a` and `b` gets through now."""
        return self.reachable(a, b) and self.reachable(b, a)

    def _delay(self, a: str, b: str) -> float:
        return max(0.0, self.delay(a, b))

    def _post(
        self, sender: str, receiver: str, deliver: Callable[[], None], *, ordered: bool
    ) -> None:
        """Delivers a packet from `sender` to `receiver` after the link's delay. An `ordered`
        packet (a notice) never overtakes an earlier notice on the same link."""
        loop = asyncio.get_running_loop()
        at = loop.time() + self._delay(sender, receiver)
        if ordered:
            link = (sender, receiver)
            at = max(at, self._link_clock.get(link, at))
            self._link_clock[link] = at
        heapq.heappush(self._in_flight, (at, self._sequence, deliver))
        self._sequence += 1
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._in_flight or self._closed:
            return
        at = self._in_flight[0][0]
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        # In no process's context: the network delivers whatever its sender became.
        self._timer = loop.call_at(at, self._deliver, context=contextvars.Context())
        self._timer_at = at

    def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        due = max(self._timer_at, loop.time())
        self._timer = None
        self._timer_at = math.inf
        while self._in_flight and self._in_flight[0][0] <= due:
            _, _, deliver = heapq.heappop(self._in_flight)
            deliver()
        self._arm(loop)

    def _listening(self, address: str) -> SimGossip | None:
        for _, run in sorted(self._runs.items()):
            if run.running and run.address == address:
                return run
        return None

    # -- internals: runs ------------------------------------------------------------------

    def _register(self, run: SimGossip) -> int:
        if self._closed:
            raise RuntimeError("the gossip net is closed")
        old = self._runs.get(run.name)
        if old is not None and old.running:
            raise RuntimeError(f"gossip name {run.name!r} is in use by a live run")
        other = self._listening(run.address)
        if other is not None:
            raise BrokenError(f"the gossip node could not bind: {run.address} is in use")
        self._epochs += 1
        self._runs[run.name] = run
        self._start_driver()
        return self._epochs

    def _start_driver(self) -> None:
        if self._driver is None or self._driver.done():
            # In no process's context: the driver is the network, and outlives every run.
            self._driver = asyncio.get_running_loop().create_task(
                self._drive(), name="sim-gossip-driver", context=contextvars.Context()
            )

    async def _drive(self) -> None:
        while any(run.running for run in self._runs.values()):
            await asyncio.sleep(self.probe_interval_s)
            self._round(asyncio.get_running_loop().time())

    def _round(self, now: float) -> None:
        """One probe of every (observer, target) pair of runs that know each other."""
        for observer in self.live():
            for name in self._targets(observer):
                if observer.running:
                    self._probe(observer, name, now)

    def _targets(self, observer: SimGossip) -> list[str]:
        """Names `observer` probes: those it holds, and those of live runs that hold it."""
        names = set(observer._view)
        names.update(run.name for run in self.live() if observer.name in run._view)
        names.discard(observer.name)
        return sorted(names)

    def _probe(self, observer: SimGossip, name: str, now: float) -> None:
        seen = observer._view.get(name)
        current = self._runs.get(name)
        target = current if current is not None and current.running else None
        if (
            seen is not None
            and seen.state is GossipState.LEFT
            and (target is None or target.epoch <= seen.run.epoch)
        ):
            return  # a run that left is gone for good; only a newer run is news
        ok = target is not None and self.both_ways(observer.name, name)
        false = False
        if ok and self.false_suspicion_p > 0 and self.rng.random() < self.false_suspicion_p:
            ok, false = False, True
        if ok:
            assert target is not None
            observer._alive(target, target._version, target._meta, direct=True)
            observer._merge(target)
        elif seen is not None:
            observer._failed(seen, now, false=false and seen.run is target)


@final
class SimGossip:
    """One run of one node's gossip layer, in a `GossipNet`. Built by `GossipNet.gossip`."""

    def __init__(self, net: GossipNet, name: str, address: str, meta: Mapping[str, str]) -> None:
        self._net = net
        self.name = name
        self.address = address
        self.epoch = 0
        """This run's epoch, from the net's counter at `start()` (0 before)."""
        self.running = False
        """Started, and neither crashed, left nor closed."""
        self._started = False
        self._left = False
        self._ended = False
        self._meta = dict(meta)
        self._version = 0
        self._view: dict[str, _Seen] = {}
        self._subscribers: list[asyncio.Queue[GossipEvent | None]] = []
        self._keys = ["k0"]
        self._sent = 0
        self._received = 0

    def __repr__(self) -> str:
        state = "live" if self.running else "left" if self._left else "gone"
        return f"<SimGossip {self.name}@{self.epoch} {state}>"

    # -- the Gossip protocol ----------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("the gossip node is already started")
        self.epoch = self._net._register(self)
        self._started = True
        self.running = True
        self._net.trace(f"gossip {self.name}@{self.epoch} starts")

    async def join(self, peers: list[str]) -> int:
        self._check_started()
        net = self._net
        contacted: list[SimGossip] = []
        for address in dict.fromkeys(peers):
            if address == self.address:
                continue
            run = net._listening(address)
            if run is not None and net.both_ways(self.name, run.name):
                contacted.append(run)
        if not self.running or not contacted:
            return 0
        # Push-pull: a round trip with each peer, then the joiner holds what they hold.
        await asyncio.sleep(
            max(net._delay(self.name, p.name) + net._delay(p.name, self.name) for p in contacted)
        )
        if not self.running:
            return len(contacted)
        net.trace(
            f"gossip {self.name}@{self.epoch} joins via {', '.join(p.name for p in contacted)}"
        )
        for peer in contacted:
            if not peer.running:
                continue
            self._alive(peer, peer._version, peer._meta, direct=True)
            for name, seen in sorted(peer._view.items()):
                if name != self.name and seen.state in _LIVE:
                    self._alive(seen.run, seen.version, seen.meta, direct=False)
        # Every member this run now holds and reaches hears of it (the peers it talked to
        # first hand, so a peer that held it dead takes it back).
        for _, seen in sorted(self._view.items()):
            other = seen.run
            if seen.state in _LIVE and other.running and net.reachable(self.name, other.name):
                notice = functools.partial(
                    other._alive,
                    self,
                    self._version,
                    dict(self._meta),
                    direct=other in contacted,
                )
                net._post(self.name, other.name, notice, ordered=True)
        return len(contacted)

    async def reachability(self, address: str, timeout_s: float) -> Reachability:
        self._check_started()
        if address == self.address:
            return Reachability.SELF
        net = self._net
        run = net._listening(address)
        if run is None:
            return Reachability.SILENT  # nothing listens there: refused at once
        if not net.both_ways(self.name, run.name):
            await asyncio.sleep(timeout_s)  # the connect times out
            return Reachability.SILENT
        rtt = net._delay(self.name, run.name) + net._delay(run.name, self.name)
        await asyncio.sleep(min(timeout_s, rtt))
        return Reachability.LISTENING

    def local(self) -> GossipMember:
        state = GossipState.LEFT if self._left else GossipState.ALIVE
        return GossipMember(
            name=self.name,
            address=self.address,
            state=state,
            epoch=self.epoch,
            meta=dict(self._meta),
        )

    def members(self) -> list[GossipMember]:
        out = [self.local()]
        out.extend(
            self._member(seen) for _, seen in sorted(self._view.items()) if seen.state in _LIVE
        )
        out.sort(key=lambda m: m.name)
        return out

    def member(self, name: str) -> GossipMember | None:
        if name == self.name:
            return self.local()
        seen = self._view.get(name)
        return None if seen is None else self._member(seen)

    def events(self) -> AsyncIterator[GossipEvent]:
        # Subscribe now, not at the first `anext` (kinship's contract).
        queue: asyncio.Queue[GossipEvent | None] = asyncio.Queue()
        if self._ended:
            queue.put_nowait(None)
        else:
            self._subscribers.append(queue)
        return _drain(queue)

    async def set_meta(self, meta: Mapping[str, str]) -> None:
        self._check_started()
        self._meta = dict(meta)
        self._version += 1
        if not self.running:
            return
        net = self._net
        for other in net.live():
            seen = other._view.get(self.name)
            if other is self or seen is None or seen.run is not self:
                continue
            if net.reachable(self.name, other.name):
                notice = functools.partial(
                    other._alive, self, self._version, dict(self._meta), direct=False
                )
                net._post(self.name, other.name, notice, ordered=True)

    async def send(self, name: str, epoch: int, data: bytes) -> None:
        self._check_started()
        seen = self._view.get(name)
        if not self.running or seen is None or seen.run.epoch != epoch or seen.state not in _LIVE:
            raise PeerGoneError(name)
        net = self._net
        target = seen.run
        self._sent += 1
        net.messages += 1
        if net.reachable(self.name, target.name):
            deliver = functools.partial(target._message, self, bytes(data))
            net._post(self.name, target.name, deliver, ordered=False)
        await asyncio.sleep(0)

    async def install_key(self, key: str | bytes) -> None:
        if str(key) not in self._keys:
            self._keys.append(str(key))

    async def use_key(self, key: str | bytes) -> None:
        self._keys.remove(str(key))
        self._keys.insert(0, str(key))

    async def remove_key(self, key: str | bytes) -> None:
        self._keys.remove(str(key))

    def key_ids(self) -> list[str]:
        return list(self._keys)

    def stats(self) -> GossipStats:
        return GossipStats(
            decrypt_failures=0,
            decode_errors=0,
            replays_dropped=0,
            messages_sent=self._sent,
            messages_received=self._received,
            messages_dropped=0,
        )

    async def leave(self, timeout_s: float) -> None:
        if not self.running:
            return
        net = self._net
        self._left = True
        net.trace(f"gossip {self.name}@{self.epoch} leaves")
        self.running = False  # stops answering probes; its streams end at close()
        longest = 0.0
        for other in net.live():
            seen = other._view.get(self.name)
            if seen is None or seen.run is not self or not net.reachable(self.name, other.name):
                continue
            net._post(self.name, other.name, functools.partial(other._gone, self), ordered=True)
            longest = max(longest, net._delay(self.name, other.name))
        await asyncio.sleep(min(timeout_s, longest))

    async def close(self) -> None:
        # Without a leave first, the others see a crash.
        if self.running:
            self._net.trace(f"gossip {self.name}@{self.epoch} closes without leaving")
        self._stop()

    # -- internals: this run as an observer -------------------------------------------------

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("the gossip node is not started")

    def _stop(self) -> None:
        self.running = False
        if not self._ended:
            self._ended = True
            for queue in self._subscribers:
                queue.put_nowait(None)
            self._subscribers.clear()

    def _member(self, seen: _Seen, state: GossipState | None = None) -> GossipMember:
        run = seen.run
        return GossipMember(
            name=run.name,
            address=run.address,
            state=seen.state if state is None else state,
            epoch=run.epoch,
            meta=dict(seen.meta),
        )

    def _emit(self, kind: GossipEventKind, seen: _Seen, what: str | None) -> None:
        """Tells every subscription; traces `what` (None: a metadata update, not traced,
        or it would drown the state changes in the simulator's trace)."""
        if what is not None:
            self._net.trace(f"gossip {self.name} sees {seen.run.name}@{seen.run.epoch} {what}")
        event = GossipEvent(kind=kind, member=self._member(seen))
        for queue in self._subscribers:
            queue.put_nowait(event)

    def _alive(
        self, run: SimGossip, version: int, meta: Mapping[str, str], *, direct: bool
    ) -> None:
        """News that `run` is alive with metadata `meta` (its version `version`): `direct`
        from a good probe or a push-pull with it (it refutes whatever this run held),
        otherwise a notice or a rumour (it refutes only with a newer version)."""
        if not self.running or run is self:
            return
        seen = self._view.get(run.name)
        if seen is not None and seen.run.epoch > run.epoch:
            return  # news about an older run
        if seen is None or seen.run.epoch < run.epoch:
            if seen is not None and seen.state in _LIVE:
                seen.state = GossipState.LEFT
                self._emit(GossipEventKind.LEFT, seen, "left (restarted)")
            fresh = _Seen(run, version, meta)
            self._view[run.name] = fresh
            self._emit(GossipEventKind.JOINED, fresh, "join")
            return
        if seen.state is GossipState.LEFT:
            return
        newer = version > seen.version
        if not (direct or newer):
            return
        changed = newer and dict(meta) != seen.meta
        if newer:
            seen.version = version
            seen.meta = dict(meta)
        if seen.state is GossipState.SUSPECT:
            seen.state = GossipState.ALIVE
            self._emit(GossipEventKind.RECOVERED, seen, "recover")
        elif seen.state is GossipState.DEAD:
            seen.state = GossipState.ALIVE
            self._emit(GossipEventKind.JOINED, seen, "rejoin")
        elif changed:
            self._emit(GossipEventKind.UPDATED, seen, None)

    def _merge(self, peer: SimGossip) -> None:
        """Push-pull after a good probe of `peer`: learn the runs it holds alive that this
        run does not hold, or holds an older run of."""
        for name, seen in sorted(peer._view.items()):
            if name == self.name or seen.state is not GossipState.ALIVE:
                continue
            mine = self._view.get(name)
            if mine is None or mine.run.epoch < seen.run.epoch:
                self._alive(seen.run, seen.version, seen.meta, direct=False)

    def _failed(self, seen: _Seen, now: float, *, false: bool) -> None:
        """A probe of `seen`'s run failed (`false`: it would have succeeded)."""
        net = self._net
        if seen.state is GossipState.ALIVE:
            seen.state = GossipState.SUSPECT
            seen.since = now
            net.suspicions += 1
            if false:
                net.false_suspicions += 1
            self._emit(GossipEventKind.SUSPECT, seen, "suspect (false)" if false else "suspect")
        elif seen.state is GossipState.SUSPECT and now - seen.since >= net.suspicion_s - _EPSILON_S:
            seen.state = GossipState.DEAD
            net.deaths += 1
            self._emit(GossipEventKind.DEAD, seen, "dead")

    def _gone(self, run: SimGossip) -> None:
        """`run`'s leave notice arrives."""
        seen = self._view.get(run.name)
        if not self.running or seen is None or seen.run is not run or seen.state not in _LIVE:
            return
        seen.state = GossipState.LEFT
        self._emit(GossipEventKind.LEFT, seen, "left")

    def _message(self, sender: SimGossip, data: bytes) -> None:
        """A direct message from `sender` arrives (dropped if this run is gone)."""
        if not self.running:
            return
        self._received += 1
        seen = self._view.get(sender.name)
        member = (
            self._member(seen)
            if seen is not None and seen.run is sender
            else sender.local()  # from a run this one does not hold (yet)
        )
        event = GossipEvent(kind=GossipEventKind.MESSAGE, member=member, data=data)
        for queue in self._subscribers:
            queue.put_nowait(event)


async def _drain(queue: asyncio.Queue[GossipEvent | None]) -> AsyncIterator[GossipEvent]:
    while True:
        event = await queue.get()
        if event is None:
            return
        yield event


if TYPE_CHECKING:

    def _conforms(run: SimGossip) -> Gossip:
        return run  # SimGossip satisfies the protocol `Membership` runs over
