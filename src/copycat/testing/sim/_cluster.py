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
import logging
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copycat._config import Config
from copycat._node import CopyCat
from copycat._world import World
from copycat.errors import CopyCatError
from copycat.host import ReplicaRule
from copycat.testing.sim._check import Checker, Recorder, drain, make_tags
from copycat.testing.sim._disk import SimDisk
from copycat.testing.sim._gossip import GossipNet
from copycat.testing.sim._loop import Process, VirtualLoop, process_context
from copycat.testing.sim._net import SimNetwork, SimTransport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from copycat._ids import DataStructureId
    from copycat.membership import MembershipConfig
    from copycat.transport import TransportConfig

log = logging.getLogger("copycat.sim")

_BASE_PORT = 20000
_GOSSIP_BASE_PORT = 30000


@dataclass(frozen=True, slots=True, kw_only=True)
class Bugs:
    """Deliberate bugs the simulator must catch (each off by default)."""

    no_fsync: bool = False
    """The disk acknowledges syncs it never makes: a power cut loses acknowledged writes."""


@dataclass(slots=True, kw_only=True)
class Options:
    nodes: int = 5
    data_centers: int = 3
    fault_s: float = 40.0
    """Simulated seconds of faults, after the cluster formed."""
    settle_s: float = 60.0
    """Simulated seconds after every fault healed within which all must catch up."""
    bugs: Bugs = field(default_factory=Bugs)
    faults: bool = True


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
        self.tasks: list[asyncio.Task[Any]] = []
        self.wall_offset_ms = 0
        self.runs = 0

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
        """A new run over the surviving disk: start the node, subscribe, propose."""
        self.runs += 1
        process = Process(f"n{self.node_id}#{self.runs}")
        self.process = process
        self.recorders = {}
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
        for ds in self.sim.subscriptions_of(self.node_id):
            self.spawn(self._subscriber(cc, ds))

    async def _subscriber(self, cc: CopyCat, ds: DataStructureId) -> None:
        sim = self.sim
        who = f"n{self.node_id}#{self.runs}/{str(ds)[-4:]}"
        rec = Recorder(sim.checker, who, str(ds), sim.tags[self.node_id])
        while True:
            try:
                rec.sub = await cc.subscribe(ds, rec.provider(lambda: b""))
                break
            except CopyCatError as exc:
                sim.trace(f"{who} subscribe failed: {type(exc).__name__}")
                await asyncio.sleep(1.0)
        self.recorders[str(ds)] = rec
        sim.trace(f"{who} subscribed")
        slow = sim.rng.random() < 0.3
        self.spawn(drain(rec, slow_s=0.05 if slow else 0.0))
        rng = random.Random(sim.rng.getrandbits(64))
        while not sim.stop_proposing:
            await asyncio.sleep(rng.expovariate(4.0))
            try:
                await rec.propose(b"")
                sim.proposals_ok += 1
            except CopyCatError:
                sim.proposals_failed += 1

    def count_snapshots(self) -> None:
        if self.cc is not None and self.cc._host is not None:
            self.sim.snapshots += self.cc._host.counters["snapshots_taken"]

    def crash(self) -> None:
        if self.process is None or self.process.vanished:
            return
        self.sim.trace(f"n{self.node_id} crashes")
        self.count_snapshots()
        self.process.vanished = True
        self.sim.net.crashed(self.node_id)
        self.sim.gossip.crash(f"n{self.node_id}")
        self.disk.crash(self.sim.rng, tear=True)
        self.cc = None
        self.recorders = {}
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
        for i in range(1, self.options.nodes + 1):
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
        self.proposals_ok = 0
        self.proposals_failed = 0
        self.crashes = 0
        self.partitions = 0
        self.pauses = 0
        self.simulated_s = 0.0
        self.repairs = 0
        self.snapshots = 0
        self._pending: set[asyncio.Task[None]] = set()
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
        return self.net.up(int(a[1:]), int(b[1:]))

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
            loop.close()
            shutil.rmtree(self.root, ignore_errors=True)
        return self.result()

    async def _main(self) -> None:
        ids = list(self.nodes)
        for node_id in ids:
            await self.nodes[node_id].start()
            await asyncio.sleep(0.5)
        await asyncio.sleep(5.0)  # gossip converges
        first = self.nodes[1]
        assert first.cc is not None
        for replicas in (1, 3, min(5, len(ids))):
            ds = await self._allocate(first, replicas)
            self.structures.append((ds, replicas))
            self.subscribers[ds] = sorted(self.rng.sample(ids, self.rng.randint(2, len(ids))))
            self.trace(f"{ds} has {replicas} replicas, subscribers {self.subscribers[ds]}")
        for node_id in ids:
            node = self.nodes[node_id]
            if node.cc is not None:
                for ds in self.subscriptions_of(node_id):
                    node.spawn(node._subscriber(node.cc, ds))
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
            kind = rng.choice(("crash", "partition", "one_way", "pause", "clock", "none"))
            victim = self.nodes[rng.choice(ids)]
            if kind == "crash" and victim.up:
                victim.crash()
                self._later(rng.uniform(1.0, 15.0), victim.start)
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
            elif kind == "clock":
                victim.wall_offset_ms += rng.randint(-60_000, 60_000)
                self.trace(f"n{victim.node_id}'s wall clock jumps to {victim.wall_offset_ms} ms")

    def _later(self, delay_s: float, fn: Callable[..., Awaitable[None] | None], *args: Any) -> None:  # noqa: ANN401
        async def later() -> None:
            await asyncio.sleep(delay_s)
            result = fn(*args)
            if asyncio.iscoroutine(result):
                await result

        task = asyncio.get_running_loop().create_task(later())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

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
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualLoop)
        for node in self.nodes.values():
            if node.process is not None and node.process.paused:
                loop.resume(node.process)
        for node in self.nodes.values():
            if not node.up:
                await node.start()
        self.trace("every fault healed")

    async def _settle(self) -> None:
        """Every live subscriber catches up with every acknowledged value in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.settle_s
        await asyncio.sleep(5.0)
        self.stop_proposing = True
        while loop.time() < deadline:
            self._sample_raft()
            if not self._lagging():
                break
            await asyncio.sleep(1.0)
        lagging = self._lagging()
        for text in lagging[:5]:
            self.checker.violation(f"not caught up {self.options.settle_s} s after healing: {text}")
        for node in self.nodes.values():
            for rec in node.recorders.values():
                if rec.stream_ended:
                    self.checker.violation(f"{rec.who}'s commits() ended without close()")
        self._check_one_group_per_id()
        for node in self.nodes.values():
            node.count_snapshots()

    def _lagging(self) -> list[str]:
        out = []
        for ds, _ in self.structures:
            acked = self.checker.acked.get(str(ds), set())
            for node_id in self.subscribers[ds]:
                node = self.nodes[node_id]
                rec = node.recorders.get(str(ds))
                if rec is None:
                    out.append(f"n{node_id} has no subscription to {ds}")
                    continue
                missing = len(acked - set(rec.history))
                if missing:
                    out.append(f"{rec.who} misses {missing} acknowledged values")
        return out

    def _sample_raft(self) -> None:
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
            if len(incarnations) > 1:
                self.checker.violation(f"group {gid} exists as {len(incarnations)} groups")

    def result(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "violations": list(self.checker.violations),
            "proposals_ok": self.proposals_ok,
            "proposals_failed": self.proposals_failed,
            "delivered": self.checker.delivered,
            "crashes": self.crashes,
            "partitions": self.partitions,
            "pauses": self.pauses,
            "snapshots": self.snapshots,
            "repairs": self.repairs,
            "trace_lines": len(self.lines),
        }


class _TraceLogs(logging.Handler):
    """The real code's log lines (info and up) go into the seed's trace, not stderr."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__(logging.INFO)
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
