"""Worker process for benchmarks/cluster.py: one CopyCat node driven by JSON lines on
stdin, answering JSON lines on stdout. Not meant to be run by hand."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import copycat
from copycat import Config, CopyCat, Subscription
from copycat.host import LOAD_SNAPSHOT


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


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


async def latency(sub: Subscription, samples: int) -> tuple[float, float]:
    payload = b"y" * 100
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await sub.propose(payload)
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3


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
    subs: dict[str, Subscription] = {}
    drains: list[asyncio.Task[None]] = []
    async with CopyCat(config) as cc:
        emit(event="ready")
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "members":
                emit(event="members", count=len(cc.members()))
            elif op == "allocate":
                ds = await cc.allocate_data_structure(replicas=cmd["replicas"])
                emit(event="allocated", id=str(ds))
            elif op == "subscribe":
                sub = await cc.subscribe(cmd["id"], lambda: b"")
                subs[cmd["id"]] = sub
                drains.append(loop.create_task(drain(sub)))
                emit(event="subscribed")
            elif op == "throughput":
                rate = await throughput(subs[cmd["id"]], cmd["count"], cmd["concurrency"])
                emit(event="throughput", per_s=rate)
            elif op == "latency":
                p50, p99 = await latency(subs[cmd["id"]], cmd["samples"])
                emit(event="latency", p50_ms=p50, p99_ms=p99)
            elif op == "idle_groups":
                for _ in range(cmd["count"]):
                    await cc.allocate_data_structure(replicas=1)
                emit(event="idle_groups", count=cmd["count"])
            elif op == "cpu":
                t = os.times()
                quiet = cc.counters()["quiescent_groups"]
                emit(event="cpu", cpu_s=t.user + t.system, quiescent=quiet)
            elif op == "exit":
                break
    emit(event="stopped")
    os._exit(0)  # kinship 0.4 may crash during interpreter teardown


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
