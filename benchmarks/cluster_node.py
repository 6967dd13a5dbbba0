"""Worker process for benchmarks/cluster.py: one CopyCat node driven by JSON lines on
stdin, answering JSON lines on stdout (the command loop, members and allocate are
copycat.testing.worker's). Not meant to be run by hand."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import TYPE_CHECKING

import copycat
from copycat import LOAD_SNAPSHOT, Config, CopyCat, Subscription
from copycat._observe import DEFAULT_STATUS_GROUPS
from copycat.testing.worker import Commands, add_node_ops, emit

if TYPE_CHECKING:
    from collections.abc import Mapping


async def drain(sub: Subscription) -> None:
    async for item in sub.commits():
        if item is LOAD_SNAPSHOT:
            await sub.load_snapshot()


async def throughput(sub: Subscription, count: int, concurrency: int) -> float:
    payload = b"x" * 100
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await sub.propose(payload)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def latency(sub: Subscription, samples: int, gap_s: float = 0.0) -> tuple[float, float]:
    payload = b"y" * 100
    times = []
    for _ in range(samples):
        if gap_s:
            await asyncio.sleep(gap_s)  # the group goes quiet in between
        started = time.perf_counter()
        await sub.propose(payload)
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3


async def read_latency(sub: Subscription, samples: int) -> float:
    """The median time of one read barrier at a time, in ms."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await sub.read_barrier()
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2] * 1e3


async def read_throughput(sub: Subscription, count: int, concurrency: int) -> float:
    """Read barriers per second with `concurrency` of them in flight."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await sub.read_barrier()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gossip-port", type=int, required=True)
    parser.add_argument("--peers", default="")
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--durable", choices=["yes", "no"], default="yes")
    args = parser.parse_args()
    config = Config.local(
        data_dir=args.data_dir,
        port=args.port,
        gossip_port=args.gossip_port,
        peers_to_contact=[p for p in args.peers.split(",") if p],
        node_id=args.node_id,
        durable=args.durable == "yes",
        tick_interval_s=0.1,
    )
    async with CopyCat(config) as cc:
        emit(event="ready")
        await node_commands(cc).serve()
    emit(event="stopped")
    os._exit(0)  # kinship 0.4 may crash during interpreter teardown


def node_commands(cc: CopyCat) -> Commands:
    """The ops of this node: members and allocate (shared), subscribe, throughput,
    latency, leader, read_latency, read_throughput, idle_groups, cpu."""
    subs: dict[str, Subscription] = {}
    drains: list[asyncio.Task[None]] = []
    commands = Commands()
    add_node_ops(commands, cc)

    def arg(cmd: Mapping[str, object], key: str) -> int:
        value = cmd[key]
        assert isinstance(value, int)
        return value

    @commands.op("subscribe")
    async def subscribe(cmd: Mapping[str, object]) -> Mapping[str, object]:
        ds = str(cmd["id"])
        sub = await cc.subscribe(ds, lambda: b"")
        subs[ds] = sub
        drains.append(asyncio.get_running_loop().create_task(drain(sub)))
        return {"event": "subscribed"}

    @commands.op("throughput")
    async def throughput_op(cmd: Mapping[str, object]) -> Mapping[str, object]:
        sub = subs[str(cmd["id"])]
        rate = await throughput(sub, arg(cmd, "count"), arg(cmd, "concurrency"))
        return {"event": "throughput", "per_s": rate}

    @commands.op("latency")
    async def latency_op(cmd: Mapping[str, object]) -> Mapping[str, object]:
        gap = cmd.get("gap_s", 0.0)
        assert isinstance(gap, int | float)
        p50, p99 = await latency(subs[str(cmd["id"])], arg(cmd, "samples"), float(gap))
        return {"event": "latency", "p50_ms": p50, "p99_ms": p99}

    @commands.op("leader")
    async def leader(cmd: Mapping[str, object]) -> Mapping[str, object]:
        ds = str(cmd["id"])
        ids = [g.leader_id for g in cc.groups() if str(g.data_structure_id) == ds]
        return {"event": "leader", "leader": ids[0] if ids else 0}

    @commands.op("read_latency")
    async def read_latency_op(cmd: Mapping[str, object]) -> Mapping[str, object]:
        p50 = await read_latency(subs[str(cmd["id"])], arg(cmd, "samples"))
        host_counters = cc.counters()
        return {
            "event": "read_latency",
            "p50_ms": p50,
            "rounds": host_counters["read_index_rounds"],
            "barriers": host_counters["read_barriers"],
        }

    @commands.op("read_throughput")
    async def read_throughput_op(cmd: Mapping[str, object]) -> Mapping[str, object]:
        sub = subs[str(cmd["id"])]
        rate = await read_throughput(sub, arg(cmd, "count"), arg(cmd, "concurrency"))
        host_counters = cc.counters()
        return {
            "event": "read_throughput",
            "per_s": rate,
            "rounds": host_counters["read_index_rounds"],
            "barriers": host_counters["read_barriers"],
        }

    @commands.op("idle_groups")
    async def idle_groups(cmd: Mapping[str, object]) -> Mapping[str, object]:
        for _ in range(arg(cmd, "count")):
            await cc.allocate_data_structure(replicas=1)
        return {"event": "idle_groups", "count": cmd["count"]}

    @commands.op("cpu")
    async def cpu(cmd: Mapping[str, object]) -> Mapping[str, object]:
        del cmd
        t = os.times()
        quiet = cc.counters()["quiescent_groups"]
        return {"event": "cpu", "cpu_s": t.user + t.system, "quiescent": quiet, "rss_mib": rss()}

    @commands.op("allocate_many")
    async def allocate_many(cmd: Mapping[str, object]) -> Mapping[str, object]:
        ids = [
            str(await cc.allocate_data_structure(replicas=arg(cmd, "replicas")))
            for _ in range(arg(cmd, "count"))
        ]
        return {"event": "allocated_many", "ids": ids}

    @commands.op("subscribe_many")
    async def subscribe_many(cmd: Mapping[str, object]) -> Mapping[str, object]:
        ids = cmd.get("ids")
        if ids is None:  # every group this node hosts
            ids = [g.data_structure_id for g in cc.groups()]
        assert isinstance(ids, list)
        started = time.perf_counter()
        for ds in map(str, ids):
            if ds not in subs:
                subs[ds] = await cc.subscribe(ds, lambda: b"")
                drains.append(asyncio.get_running_loop().create_task(drain(subs[ds])))
        return {"event": "subscribed_many", "count": len(ids), "s": time.perf_counter() - started}

    @commands.op("spread")
    async def spread_op(cmd: Mapping[str, object]) -> Mapping[str, object]:
        """`count` proposals spread round-robin over every subscription of this node,
        `concurrency` in flight; the time until the last returned."""
        chosen = list(subs.values())
        rate, elapsed = await spread(chosen, arg(cmd, "count"), arg(cmd, "concurrency"))
        return {"event": "spread", "per_s": rate, "s": elapsed, "count": cmd["count"]}

    @commands.op("scrape")
    async def scrape(cmd: Mapping[str, object]) -> Mapping[str, object]:
        """How long what `/metrics` and `/status` serve takes to build, in ms (the
        event loop waits that long at every scrape)."""
        del cmd
        started = time.perf_counter()
        cc.metrics()
        metrics_ms = (time.perf_counter() - started) * 1e3
        started = time.perf_counter()
        cc.status(max_groups=DEFAULT_STATUS_GROUPS)
        status_ms = (time.perf_counter() - started) * 1e3
        return {"event": "scrape", "metrics_ms": metrics_ms, "status_ms": status_ms}

    profiler: list[object] = []

    @commands.op("profile")
    async def profile_op(cmd: Mapping[str, object]) -> Mapping[str, object]:
        """{"op": "profile", "path": P} starts profiling this node, {"op": "profile"}
        stops and writes the profile to the path given at the start."""
        import cProfile

        path = cmd.get("path")
        if path is not None:
            prof = cProfile.Profile()
            profiler[:] = [prof, str(path)]
            prof.enable()
        elif profiler:
            prof, where = profiler
            assert isinstance(prof, cProfile.Profile)
            assert isinstance(where, str)
            prof.disable()
            prof.dump_stats(where)
            profiler.clear()
        return {"event": "profile"}

    return commands


def rss() -> float:
    """This process's resident set, in MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def spread(subs: list[Subscription], count: int, concurrency: int) -> tuple[float, float]:
    payload = b"z" * 100
    remaining = count
    turn = 0

    async def worker() -> None:
        nonlocal remaining, turn
        while remaining > 0:
            remaining -= 1
            turn += 1
            await subs[turn % len(subs)].propose(payload)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return count / elapsed, elapsed


if __name__ == "__main__":
    profile_dir = os.environ.get("COPYCAT_BENCH_PROFILE")
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        _exit = os._exit

        def _dump_and_exit(code: int) -> None:
            profiler.disable()
            node = next(a for a in sys.argv if a.startswith("--node-id=")).split("=")[1]
            profiler.dump_stats(os.path.join(profile_dir, f"node{node}.prof"))
            _exit(code)

        os._exit = _dump_and_exit  # type: ignore[assignment]
    copycat.run(main())
