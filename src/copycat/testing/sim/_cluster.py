# One simulated cluster: real `CopyCat` nodes on a `VirtualLoop`, over `SimNetwork`,
# `GossipNet` and one `SimDisk` each, driven by a workload and a nemesis, judged by
# `Checker`.
#
# What lives here: node runs (start, crash, restart, pause), the built-in workload
# (unique proposals from every node, slow readers, snapshots), the nemesis schedule, the
# raft-level samples, and the final liveness check after every fault is healed.
#
# What must not: change what the real code does. Everything here acts from outside, as
# an operator, a network or a power cut would.
"""`Simulation`: one seed of a whole simulated cluster."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import random
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copycat._config import Config
from copycat._node import CopyCat
from copycat._world import World
from copycat.errors import CopyCatError
from copycat.host import ReplicaRule
from copycat.testing.sim._check import Checker, Recorder, make_tags
from copycat.testing.sim._disk import SimDisk
from copycat.testing.sim._gossip import GossipNet
from copycat.testing.sim._loop import Process, VirtualLoop, process_context
from copycat.testing.sim._net import SimNetwork, SimTransport
from copycat.testing.sim._program import CheckedCopyCat, Program, SimNode, unique_values

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from copycat._ids import DataStructureId
    from copycat.membership import MembershipConfig
    from copycat.transport import TransportConfig

log = logging.getLogger("copycat.sim")

_BASE_PORT = 20000
_FAULTS = (
    "crash",
    "partition",
    "one_way",
    "pause",
    "clock",
    "none",
    "crash",
    "partition",
    "leave",
    "restart_all",
    "gossip_cut",
)
"""What the nemesis picks from, evenly (crashes and partitions twice as often; at most
one whole-cluster restart per seed). A gossip cut loses gossip's packets between two
sides while raft's still flow, for longer than the repair grace: gossip then reports
nodes failed that every leader still hears from (what a UDP-only firewall rule does)."""
_HEARSAY_MARGIN_S = 3.0
"""A voter removed while its link to the leader had been whole for the repair grace and
this much more was removed on hearsay: raft's own traffic said it was there."""
_RECENT_S = 60.0
"""How far back a removal is matched with the replacement added for it, or with the
victim's `leave`."""
_GOSSIP_BASE_PORT = 30000


@dataclass(frozen=True, slots=True, kw_only=True)
class Bugs:
    """Deliberate bugs the simulator must catch (each off by default)."""

    no_fsync: bool = False
    """The disk acknowledges syncs it never makes: a power cut loses acknowledged writes."""


@dataclass(slots=True, kw_only=True)
class Options:
    nodes: int = 5
    """Nodes that form the cluster at the start."""
    joins: int = 1
    """Nodes that join it later, during the faults."""
    data_centers: int = 3
    fault_s: float = 40.0
    """Simulated seconds of faults, after the cluster formed."""
    settle_s: float = 60.0
    """Simulated seconds after every fault healed within which all must catch up."""
    bugs: Bugs = field(default_factory=Bugs)
    faults: bool = True
    program: Program = unique_values
    """What every node runs at each start (see `SimNode`); the built-in one proposes
    unique values."""
    replicas: tuple[int, ...] = (1, 3, 5)
    """One data structure per entry, with that many replicas (capped at `nodes`)."""
    log_level: int = logging.INFO
    """The real code's log lines at this level and up go into the trace."""


class Node:
    """One simulated machine: its disk outlives its runs."""

    def __init__(self, sim: Simulation, node_id: int, dc: str, rack: str) -> None:
        self.sim = sim
        self.node_id = node_id
        self.dc = dc
        self.rack = rack
        self.disk = SimDisk(durable=True, fsync=not sim.options.bugs.no_fsync)
        self.process: Process | None = None
        self.cc: CopyCat | None = None
        self.recorders: dict[str, Recorder] = {}
        self.states: dict[str, Callable[[], object]] = {}
        self.tasks: list[asyncio.Task[Any]] = []
        self.wall_offset_ms = 0
        self.runs = 0
        self.leaving = False
        """`CopyCat.leave` is under way in this run."""
        self.left_at: float | None = None
        """When this node last began to leave (its voters may be removed a while later)."""

    @property
    def up(self) -> bool:
        return self.process is not None and not self.process.vanished

    def config(self) -> Config:
        sim = self.sim
        seeds = tuple(
            f"127.0.0.1:{_GOSSIP_BASE_PORT + other}" for other in sim.nodes if other != self.node_id
        )
        return Config(
            hostname="127.0.0.1",
            port=_BASE_PORT + self.node_id,
            gossip_port=_GOSSIP_BASE_PORT + self.node_id,
            data_dir=str(sim.root / f"n{self.node_id}"),
            peers_to_contact=seeds if self.runs > 1 or self.node_id != 1 else (),
            data_center=self.dc,
            rack=self.rack,
            node_id=self.node_id,
            durable=True,
            tick_interval_s=0.1,
            election_ticks=10,
            snapshot_every_entries=sim.rng.choice((50, 100, 200)),
            snapshot_keep_entries=20,
            proposal_timeout_s=10.0,
            replicas=3,
            repair_grace_s=sim.repair_grace_s,
        )

    def world(self, process: Process) -> World:
        sim = self.sim
        rng = random.Random(sim.rng.getrandbits(64))

        def transport(cfg: TransportConfig) -> SimTransport:
            return SimTransport(sim.net, cfg, process, _BASE_PORT + self.node_id)

        def gossip(cfg: MembershipConfig, meta: Any) -> Any:  # noqa: ANN401
            return sim.gossip.gossip(cfg.gossip_name, f"127.0.0.1:{cfg.gossip_port}")(cfg, meta)

        loop = asyncio.get_running_loop()
        return World(
            random_bytes=rng.randbytes,
            wall_ms=lambda: 1_700_000_000_000 + int(loop.time() * 1000) + self.wall_offset_ms,
            log_store=lambda _cfg: self.disk.open(),
            transport=transport,
            gossip=gossip,
        )

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        assert self.process is not None
        task = asyncio.get_running_loop().create_task(coro, context=process_context(self.process))
        self.tasks.append(task)
        return task

    async def start(self) -> None:
        """A new run over the surviving disk: start the node and its program."""
        self.runs += 1
        self.leaving = False
        process = Process(f"n{self.node_id}#{self.runs}")
        self.process = process
        self.recorders = {}
        self.states = {}
        self.tasks = []
        self.sim.trace(f"n{self.node_id} starts (run {self.runs})")
        done = self.spawn(self._run())
        with contextlib.suppress(CopyCatError):
            await asyncio.shield(done)

    async def _run(self) -> None:
        assert self.process is not None
        cc = CopyCat(self.config(), world=self.world(self.process))
        await cc.start()
        self.cc = cc
        if self.sim.structures:
            self.run_program()

    def run_program(self) -> None:
        """Start the program of this run (once the data structures exist)."""
        assert self.cc is not None
        sim = self.sim
        node = SimNode(
            self.node_id,
            CheckedCopyCat(
                self.cc,
                sim.checker,
                f"n{self.node_id}#{self.runs}",
                sim.tags[self.node_id],
                self.recorders,
                sim.trace,
            ),
            tuple(sim.subscriptions_of(self.node_id)),
            random.Random(sim.rng.getrandbits(64)),
            lambda: not sim.stop_proposing,
            self.states,
        )
        self.spawn(self._program(node))

    async def _program(self, node: SimNode) -> None:
        try:
            await self.sim.options.program(node)
        except CopyCatError as exc:
            self.sim.trace(f"n{self.node_id}'s program stopped: {type(exc).__name__}: {exc}")

    def count_snapshots(self) -> None:
        """Add this run's snapshots and repairs to the totals (at its end)."""
        if self.cc is not None and self.cc._host is not None:
            self.sim.snapshots += self.cc._host.counters["snapshots_taken"]
        if self.cc is not None and self.cc._repair is not None:
            self.sim.repairs += sum(self.cc._repair.counters.values())

    def crash(self, *, in_write: bool = False) -> None:
        """Power cut: the run's tasks vanish, its unsynced writes are lost (a prefix may
        have reached the disk). `in_write`: in the middle of a write, with what the node
        sent before it still on its way."""
        if self.process is None or self.process.vanished:
            return
        self.sim.trace(
            f"n{self.node_id} crashes" + (" in the middle of a write" if in_write else "")
        )
        self.count_snapshots()
        self.process.vanished = True
        self.sim.net.crashed(self.node_id, keep_sent=in_write)
        self.sim.gossip.crash(f"n{self.node_id}")
        self.disk.crash(self.sim.rng, tear=True)
        self.cc = None
        self.recorders = {}
        self.states = {}
        self.sim.crashes += 1


class Simulation:
    """One seed: build the cluster, run the workload under the nemesis, heal, check."""

    def __init__(self, seed: int, options: Options | None = None) -> None:
        self.seed = seed
        self.options = options or Options()
        self.rng = random.Random(seed)
        self.lines: list[str] = []
        self.checker = Checker(self.trace)
        self.root = Path(tempfile.mkdtemp(prefix=f"copycat-sim-{seed}-"))
        self.repair_grace_s = 8.0
        dcs = [f"dc{i + 1}" for i in range(self.options.data_centers)]
        self.nodes: dict[int, Node] = {}
        for i in range(1, self.options.nodes + self.options.joins + 1):
            self.nodes[i] = Node(self, i, dcs[(i - 1) % len(dcs)], f"r{i % 2}")
        self.tags = {i: make_tags(i) for i in self.nodes}
        self.net = SimNetwork(self.rng, latency=self._latency, trace=self.trace)
        self.gossip = GossipNet(
            random.Random(self.rng.getrandbits(64)),
            reachable=self._reachable,
            delay=lambda a, b: self._latency(int(a[1:]), int(b[1:])),
            probe_interval_s=1.0,
            suspicion_s=4.0,
            false_suspicion_p=0.01,
            trace=self.trace,
        )
        self.structures: list[tuple[DataStructureId, int]] = []
        self.subscribers: dict[DataStructureId, list[int]] = {}
        self.stop_proposing = False
        self.healed = False
        self.crashes = 0
        self.partitions = 0
        self.pauses = 0
        self.simulated_s = 0.0
        self.repairs = 0
        self.snapshots = 0
        self.joins = 0
        self.leaves = 0
        self.cluster_restarts = 0
        self.gossip_cuts = 0
        self._gossip_cut: set[tuple[int, int]] = set()
        """(a, b): gossip's packets from node a to node b are lost (raft's are not)."""
        self._whole_since: dict[tuple[int, int], float] = {}
        """(a, b), a < b: since when raft's packets get through both ways between two live
        runs that are not paused and know each other's address (sampled with the raft
        samples)."""
        self._voters: dict[int, tuple[int, int, frozenset[int]]] = {}
        """Per group: the last leader sample's (leader, term, voters)."""
        self._voter_history: dict[int, list[tuple[float, frozenset[int]]]] = {}
        """Per group: the voters of every leader sample of the last `_RECENT_S`."""
        self._pending: set[asyncio.Task[None]] = set()
        self._split: set[int] = set()
        self._context = contextvars.copy_context()
        self._loop: VirtualLoop | None = None

    # -- the world ------------------------------------------------------------------------

    def trace(self, line: str) -> None:
        now = self._loop.time() if self._loop is not None else 0.0
        self.lines.append(f"{now:10.3f} {line}")

    def _latency(self, a: int, b: int) -> float:
        na, nb = self.nodes.get(a), self.nodes.get(b)
        same_dc = na is not None and nb is not None and na.dc == nb.dc
        return 0.0005 if same_dc else 0.01

    def _reachable(self, a: str, b: str) -> bool:
        na, nb = int(a[1:]), int(b[1:])
        return self.net.up(na, nb) and (na, nb) not in self._gossip_cut

    def subscriptions_of(self, node_id: int) -> list[DataStructureId]:
        return [ds for ds, _ in self.structures if node_id in self.subscribers[ds]]

    # -- the run --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        loop = VirtualLoop()
        self._loop = loop
        handler = _TraceLogs(self)
        logger = logging.getLogger("copycat")
        logger.addHandler(handler)
        propagate, logger.propagate = logger.propagate, False
        level = logger.level
        logger.setLevel(self.options.log_level)
        try:
            limit_s = 30.0 + self.options.fault_s + self.options.settle_s + 60.0
            try:
                loop.run_until_complete(asyncio.wait_for(self._main(), limit_s))
            except TimeoutError:
                self.checker.violation(f"the run did not end within {limit_s} simulated s")
            except Exception as exc:  # the real code failed where no caller catches it
                self.checker.violation(f"the run stopped: {type(exc).__name__}: {exc}")
            if loop.callbacks_run > loop.budget:
                self.checker.violation(f"the run used its {loop.budget:,} callbacks (a spin?)")
            self.simulated_s = loop.time()
            for text in loop.errors[:5]:
                self.checker.violation(f"unhandled in a node: {text}")
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)
            self._discard(loop)
            shutil.rmtree(self.root, ignore_errors=True)
        return self.result()

    def _discard(self, loop: VirtualLoop) -> None:
        """Close the loop and collect what the crashed runs left mid-await. Their
        coroutines are closed half-way, which is what a crash means; a `finally` that
        awaits then complains to `sys.unraisablehook`, which hears nothing meanwhile,
        and a coroutine made but never started warns that it was never awaited, which
        is not shown either."""
        for node in self.nodes.values():
            node.tasks = []
            node.cc = None
            node.recorders = {}
            node.states = {}
        hook = sys.unraisablehook
        sys.unraisablehook = lambda _unraisable: None
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
                loop.close()
                loop.processes.clear()
                gc.collect()
        finally:
            sys.unraisablehook = hook

    async def _main(self) -> None:
        self._context = contextvars.copy_context()
        watch = asyncio.get_running_loop().create_task(self._watch())
        try:
            await self._run_all()
        finally:
            watch.cancel()
        self._sample_raft()
        self._check_one_group_per_id()

    async def _run_all(self) -> None:
        ids = list(self.nodes)
        founders = ids[: self.options.nodes]
        for node_id in founders:
            await self.nodes[node_id].start()
            await asyncio.sleep(0.5)
        await asyncio.sleep(5.0)  # gossip converges
        first = self.nodes[1]
        assert first.cc is not None
        for wanted in self.options.replicas:
            replicas = min(wanted, len(founders))
            ds = await self._allocate(first, replicas)
            self.structures.append((ds, replicas))
            self.subscribers[ds] = sorted(self.rng.sample(ids, self.rng.randint(2, len(ids))))
            self.trace(f"{ds} has {replicas} replicas, subscribers {self.subscribers[ds]}")
        for node_id in founders:
            node = self.nodes[node_id]
            if node.cc is not None:
                node.run_program()
        for node_id in ids[len(founders) :]:
            self._later(self.rng.uniform(0.0, self.options.fault_s / 2), self._join, node_id)
        if self.options.faults:
            await self._nemesis(self.options.fault_s)
        else:
            await asyncio.sleep(self.options.fault_s)
        await self._heal_everything()
        await self._settle()

    async def _allocate(self, node: Node, replicas: int) -> DataStructureId:
        assert node.cc is not None
        while True:
            try:
                return await node.cc.allocate_data_structure(replicas=replicas)
            except CopyCatError as exc:
                self.trace(f"allocate {replicas} failed: {type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def _nemesis(self, duration_s: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + duration_s
        rng = self.rng
        ids = list(self.nodes)
        while loop.time() < end:
            await asyncio.sleep(rng.uniform(1.0, 6.0))
            kind = rng.choice(_FAULTS)
            victim = self.nodes[rng.choice(ids)]
            if kind == "crash" and victim.up:
                self._later(0.0, self._crash_and_restart, victim, rng.random() < 0.5)
            elif kind in ("partition", "one_way"):
                side = set(rng.sample(ids, rng.randint(1, len(ids) // 2)))
                hold = rng.choice((rng.uniform(1.0, 5.0), rng.uniform(10.0, 20.0)))
                self.partitions += 1
                self.trace(f"{kind} {sorted(side)} for {hold:.1f} s")
                for a in side:
                    for b in ids:
                        if b not in side:
                            self.net.cut(a, b)
                            if kind == "partition":
                                self.net.cut(b, a)
                self._later(hold, self._heal_cut, side)
            elif kind == "pause" and victim.up and victim.process is not None:
                process = victim.process
                process.paused = True
                self.pauses += 1
                hold = rng.uniform(0.5, 12.0)
                self.trace(f"n{victim.node_id} pauses for {hold:.1f} s")
                self._later(hold, self._resume, process)
            elif kind == "leave" and victim.up and victim.cc is not None and not victim.leaving:
                self.leaves += 1
                victim.spawn(self._leave_and_return(victim))
            elif kind == "restart_all" and self.cluster_restarts == 0:
                self.cluster_restarts += 1
                self._later(0.0, self._restart_all)
            elif kind == "gossip_cut":
                side = set(rng.sample(ids, rng.randint(1, len(ids) // 2)))
                hold = rng.uniform(10.0, 25.0)
                self.gossip_cuts += 1
                self.trace(f"gossip cut {sorted(side)} for {hold:.1f} s (raft still flows)")
                cut = {(a, b) for a in side for b in ids if b not in side}
                cut |= {(b, a) for a, b in cut}
                self._gossip_cut |= cut
                self._later(hold, self._gossip_cut.difference_update, cut)
            elif kind == "clock":
                victim.wall_offset_ms += rng.randint(-60_000, 60_000)
                self.trace(f"n{victim.node_id}'s wall clock jumps to {victim.wall_offset_ms} ms")

    def _later(self, delay_s: float, fn: Callable[..., Awaitable[None] | None], *args: Any) -> None:  # noqa: ANN401
        async def later() -> None:
            await asyncio.sleep(delay_s)
            result = fn(*args)
            if asyncio.iscoroutine(result):
                await result

        # In the simulation's own context, never a node's: a node that vanishes must not
        # take the nemesis's plans with it.
        task = asyncio.get_running_loop().create_task(later(), context=self._context.copy())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _crash_and_restart(self, victim: Node, in_write: bool) -> None:
        """Crash `victim` now, or (`in_write`) at its next write within a second: between
        the messages it sent and the write that should have come first. Then restart it
        after up to 15 s."""
        if in_write:
            victim.disk.crash_at_write = lambda: self._context.copy().run(
                victim.crash, in_write=True
            )
            for _ in range(10):
                if not victim.up:
                    break
                await asyncio.sleep(0.1)
            victim.disk.crash_at_write = None
        victim.crash()
        await asyncio.sleep(self.rng.uniform(1.0, 15.0))
        await self._start_if_down(victim)

    async def _join(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.runs == 0:
            self.joins += 1
            self.trace(f"n{node_id} joins the cluster")
            await node.start()

    async def _leave_and_return(self, victim: Node) -> None:
        """`victim` leaves on purpose (`CopyCat.leave`: its replicas handed over, its
        subscriptions closed), then comes back 5 to 15 s later over the same data dir."""
        assert victim.cc is not None
        assert victim.process is not None
        self.trace(f"n{victim.node_id} leaves")
        victim.leaving = True
        victim.left_at = asyncio.get_running_loop().time()
        for rec in victim.recorders.values():
            rec.closed = True  # leave() closes them: their streams end by design
        await victim.cc.leave(timeout_s=20.0)
        self.trace(f"n{victim.node_id} left")
        victim.count_snapshots()
        victim.cc = None
        victim.recorders = {}
        victim.states = {}
        victim.process.vanished = True  # shut down: nothing of this run is left
        back_in = 0.0 if self.healed else self.rng.uniform(5.0, 15.0)
        self._later(back_in, self._start_if_down, victim)

    async def _start_if_down(self, node: Node) -> None:
        if not node.up:
            await node.start()

    async def _restart_all(self) -> None:
        """The whole cluster loses power at once and comes back 1 to 10 s later."""
        self.trace("the whole cluster loses power")
        down = [node for node in self.nodes.values() if node.up]
        for node in down:
            node.crash()
        await asyncio.sleep(self.rng.uniform(1.0, 10.0))
        for node in down:
            await self._start_if_down(node)

    async def _heal_cut(self, side: set[int]) -> None:
        for a in sorted(side):
            for b in self.nodes:
                self.net.heal(a, b)
                self.net.heal(b, a)

    def _resume(self, process: Process) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualLoop)
        if not process.vanished:
            loop.resume(process)

    async def _heal_everything(self) -> None:
        for task in list(self._pending):
            task.cancel()
        self.net.heal_all()
        self._gossip_cut.clear()
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualLoop)
        for node in self.nodes.values():
            if node.process is not None and node.process.paused:
                loop.resume(node.process)
        self.healed = True
        for node in self.nodes.values():
            if not node.up:
                await node.start()
        self.trace("every fault healed")

    async def _settle(self) -> None:
        """Every live subscriber catches up with every committed value in time; then every
        node's reported state of a data structure is the same."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.settle_s
        await asyncio.sleep(5.0)
        self.stop_proposing = True
        while loop.time() < deadline:
            if not self._lagging():
                break
            await asyncio.sleep(1.0)
        lagging = self._lagging()
        for text in lagging[:5]:
            self.checker.violation(f"not caught up {self.options.settle_s} s after healing: {text}")
        if not lagging:
            self._check_states()
        for node in self.nodes.values():
            for rec in node.recorders.values():
                if rec.stream_ended:
                    self.checker.violation(f"{rec.who}'s commits() ended without close()")
        for node in self.nodes.values():
            node.count_snapshots()

    def _lagging(self) -> list[str]:
        """Subscribers missing an acknowledged value, or behind another subscriber of the
        same data structure (every committed value reaches every subscriber)."""
        out = []
        for ds, _ in self.structures:
            acked = self.checker.acked.get(str(ds), set())
            longest = len(self.checker.order.get(str(ds), []))
            for node_id in self.subscribers[ds]:
                node = self.nodes[node_id]
                rec = node.recorders.get(str(ds))
                if rec is None:
                    out.append(f"n{node_id} has no subscription to {ds}")
                    continue
                missing = len(acked - set(rec.history))
                if missing:
                    out.append(f"{rec.who} misses {missing} acknowledged values")
                elif len(rec.history) < longest:
                    out.append(f"{rec.who} is {longest - len(rec.history)} values behind")
        return out

    def _check_states(self) -> None:
        """Every node that reported its state of a data structure holds the same one."""
        for ds, _ in self.structures:
            states = {
                node_id: node.states[str(ds)]()
                for node_id, node in self.nodes.items()
                if str(ds) in node.states and node.up
            }
            if len(states) < 2:
                continue
            first_id, first = next(iter(states.items()))
            for node_id, state in states.items():
                if state != first:
                    self.checker.violation(
                        f"n{node_id}'s state of {ds} differs from n{first_id}'s: "
                        f"{_short(state)} vs {_short(first)}"
                    )
                    break

    async def _watch(self) -> None:
        """Raft's invariants on every member, and one group per data structure id, twice
        a simulated second for the whole run."""
        while True:
            self._sample_raft()
            self._check_one_group_per_id()
            await asyncio.sleep(0.5)

    def _sample_raft(self) -> None:
        self._sample_links()
        for node in self.nodes.values():
            cc = node.cc
            if cc is None or cc._host is None:
                continue
            host = cc._host
            for gid in list(host.groups):
                status = host.group_status(gid)
                if status is None:
                    continue
                term_at = host.group(gid).raw.term_at(status.commit) if status.commit else 0
                self.checker.raft_sample(
                    node.node_id, gid, status.term, status.is_leader, status.commit, term_at or 0
                )
                if status.is_leader:
                    conf = host.group(gid).raw.conf_state()
                    if not conf.is_joint():
                        self._check_voters(gid, node.node_id, status.term, frozenset(conf.voters))

    def _sample_links(self) -> None:
        now = asyncio.get_running_loop().time()
        ids = sorted(self.nodes)
        transports = self.net.nodes
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                ta, tb = transports.get(a), transports.get(b)
                if (
                    ta is not None
                    and tb is not None
                    and ta.knows(b)
                    and tb.knows(a)
                    and self.net.up(a, b)
                    and self.net.up(b, a)
                ):
                    self._whole_since.setdefault((a, b), now)
                else:
                    self._whole_since.pop((a, b), None)

    def _check_voters(self, gid: int, leader: int, term: int, voters: frozenset[int]) -> None:
        """Repair's rules, judged by what they do to a group's voters (docs/host.md): a
        voter that is not leaving is removed only once its replacement is a voter (so a
        failure never shrinks a group), and only when the leader has had no word from
        it for the repair grace (so never while raft's packets between them got
        through: gossip's word alone is hearsay). Consecutive samples of one leader in
        one term are compared, whose configurations only move forward."""
        now = asyncio.get_running_loop().time()
        history = self._voter_history.setdefault(gid, [])
        while history and history[0][0] < now - _RECENT_S:
            history.pop(0)
        earlier = [seen for _, seen in history]
        history.append((now, voters))
        last = self._voters.get(gid)
        self._voters[gid] = (leader, term, voters)
        if last is None or last[:2] != (leader, term):
            return
        removed = sorted(last[2] - voters)
        unexplained = [r for r in removed if not self._leaving_recently(r, now)]
        if not unexplained:
            return
        stayed = frozenset.intersection(*earlier) if earlier else last[2]
        newcomers = voters - stayed
        if len(unexplained) > len(newcomers):
            self.checker.violation(
                f"group {gid} shrank from {len(last[2])} to {len(voters)} voters: node "
                f"{unexplained[0]} removed by leader n{leader} without a replacement"
            )
        for victim in unexplained:
            pair = (min(leader, victim), max(leader, victim))
            since = self._whole_since.get(pair)
            if since is not None and now - since >= self.repair_grace_s + _HEARSAY_MARGIN_S:
                self.checker.violation(
                    f"group {gid}: leader n{leader} removed node {victim} on hearsay: raft's "
                    f"packets between them had got through for {now - since:.1f} s"
                )

    def _leaving_recently(self, node_id: int, now: float) -> bool:
        node = self.nodes.get(node_id)
        if node is None:
            return False
        return node.leaving or (node.left_at is not None and now - node.left_at <= _RECENT_S)

    def _check_one_group_per_id(self) -> None:
        seen: dict[int, set[int]] = {}
        for node in self.nodes.values():
            cc = node.cc
            if cc is None or cc._host is None:
                continue
            for gid in cc._host.groups:
                rule = ReplicaRule.decode(cc._host.group_meta(gid))
                if rule is not None:
                    seen.setdefault(gid, set()).add(rule.incarnation)
        for gid, incarnations in seen.items():
            if len(incarnations) > 1 and gid not in self._split:
                self._split.add(gid)
                self.checker.violation(f"group {gid} exists as {len(incarnations)} groups")

    def result(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "violations": list(self.checker.violations),
            "proposals_ok": self.checker.ok,
            "proposals_failed": self.checker.failed,
            "delivered": self.checker.delivered,
            "crashes": self.crashes,
            "partitions": self.partitions,
            "pauses": self.pauses,
            "snapshots": self.snapshots,
            "repairs": self.repairs,
            "joins": self.joins,
            "leaves": self.leaves,
            "cluster_restarts": self.cluster_restarts,
            "gossip_cuts": self.gossip_cuts,
            "trace_lines": len(self.lines),
        }


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


class _TraceLogs(logging.Handler):
    """The real code's log lines (info and up) go into the seed's trace, not stderr."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim.options.log_level)
        self._sim = sim

    def emit(self, record: logging.LogRecord) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        text = record.getMessage()
        if "takes the place of" in text or "topping up" in text:
            self._sim.repairs += 1
        self._sim.trace(f"log {record.levelname.lower()} {text}")
