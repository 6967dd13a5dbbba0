"""Worker process for benchmarks/wan.py: one CopyCat node on the WAN preset (durable,
mutual TLS, gossip keys), dialing its peers through the WAN emulator's links, driven by
JSON lines on stdin and answering JSON lines on stdout (the command loop, members and
allocate are copycat.testing.worker's). Not meant to be run by hand.

Times it reports are `time.monotonic()`, one clock for every process of the machine."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import TYPE_CHECKING

import copycat

# The same load as benchmarks/cluster.py's node: this script runs from benchmarks/.
from cluster_node import latency, throughput
from copycat import LOAD_SNAPSHOT, Config, CopyCat, Subscription
from copycat.errors import CopyCatError
from copycat.testing.wan import parse_routes, redirect_world
from copycat.testing.worker import Commands, add_node_ops, emit

if TYPE_CHECKING:
    from collections.abc import Mapping


async def drain(sub: Subscription, ds: str) -> None:
    async for item in sub.commits():
        if item is LOAD_SNAPSHOT:
            state = await sub.load_snapshot()
            emit(event="loaded", id=ds, bytes=len(state), at=time.monotonic())


async def probe(sub: Subscription, acks: list[float], stop: asyncio.Event) -> None:
    """One proposal at a time until `stop`; the time of each commit goes to `acks`."""
    while not stop.is_set():
        try:
            await sub.propose(b"p" * 100)
        except CopyCatError:
            continue
        acks.append(time.monotonic())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gossip-port", type=int, required=True)
    parser.add_argument("--peers", default="")
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--data-center", required=True)
    parser.add_argument("--routes", default="", help="node=host:port,... (the WAN links)")
    parser.add_argument("--gossip-key", required=True)
    parser.add_argument("--tls-dir", required=True, help="copycat.transport.make_dev_certs's")
    parser.add_argument("--blob-mb", type=float, default=0.0, help="snapshot state size")
    parser.add_argument("--snapshot-every", type=int, default=10_000)
    parser.add_argument("--follow-writers", choices=["yes", "no"], default="no")
    args = parser.parse_args()
    tls = os.path.join(args.tls_dir, f"node-{args.node_id}")
    config = Config.wan(
        hostname="127.0.0.1",
        data_dir=args.data_dir,
        port=args.port,
        gossip_port=args.gossip_port,
        peers_to_contact=[p for p in args.peers.split(",") if p],
        node_id=args.node_id,
        data_center=args.data_center,
        gossip_keys=[args.gossip_key],
        tls_ca_file=os.path.join(args.tls_dir, "ca.pem"),
        tls_cert_file=f"{tls}.pem",
        tls_key_file=f"{tls}.key",
        snapshot_every_entries=args.snapshot_every,
        snapshot_keep_entries=0,
        leader_follows_writers=args.follow_writers == "yes",
    )
    blob = os.urandom(int(args.blob_mb * (1 << 20)))  # incompressible: the link's own speed
    world = redirect_world(parse_routes(args.routes))
    async with CopyCat(config, world=world) as cc:
        emit(event="ready", node_id=cc.node_id)
        await node_commands(cc, blob).serve()
    emit(event="stopped")
    os._exit(0)  # kinship 0.4 may crash during interpreter teardown


def node_commands(cc: CopyCat, blob: bytes) -> Commands:
    """The ops of this node: members and allocate (shared), subscribe, status, latency,
    throughput, fill, probe, probe_wait and probe_stop."""
    subs: dict[str, Subscription] = {}
    tasks: set[asyncio.Task[None]] = set()
    probes: dict[str, tuple[list[float], asyncio.Event]] = {}
    commands = Commands()
    add_node_ops(commands, cc)

    def arg(cmd: Mapping[str, object], key: str) -> int:
        value = cmd[key]
        assert isinstance(value, int)
        return value

    def spawn(coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    @commands.op("subscribe")
    async def subscribe(cmd: Mapping[str, object]) -> Mapping[str, object]:
        ds = str(cmd["id"])
        sub = await cc.subscribe(ds, lambda: blob)
        subs[ds] = sub
        spawn(drain(sub, ds))
        return {"event": "subscribed", "id": ds, "at": time.monotonic()}

    @commands.op("status")
    async def status(cmd: Mapping[str, object]) -> Mapping[str, object]:
        ds = str(cmd["id"])
        for g in cc.groups():
            if g.data_structure_id == ds:
                return {
                    "event": "status",
                    "leader": g.leader_id,
                    "term": g.term,
                    "role": g.raft_role,
                    "voters": list(g.voters),
                    "counters": cc.counters(),
                }
        return {"event": "status", "leader": 0, "term": 0, "role": "", "voters": []}

    @commands.op("latency")
    async def latency_op(cmd: Mapping[str, object]) -> Mapping[str, object]:
        p50, p99 = await latency(subs[str(cmd["id"])], arg(cmd, "samples"))
        return {"event": "latency", "p50_ms": p50, "p99_ms": p99}

    @commands.op("throughput")
    async def throughput_op(cmd: Mapping[str, object]) -> Mapping[str, object]:
        sub = subs[str(cmd["id"])]
        rate = await throughput(sub, arg(cmd, "count"), arg(cmd, "concurrency"))
        return {"event": "throughput", "per_s": rate}

    @commands.op("fill")
    async def fill(cmd: Mapping[str, object]) -> Mapping[str, object]:
        sub = subs[str(cmd["id"])]
        await throughput(sub, arg(cmd, "count"), 64)
        return {"event": "filled"}

    @commands.op("probe")
    async def probe_op(cmd: Mapping[str, object]) -> Mapping[str, object]:
        ds = str(cmd["id"])
        acks: list[float] = []
        stop = asyncio.Event()
        probes[ds] = (acks, stop)
        spawn(probe(subs[ds], acks, stop))
        return {"event": "probing"}

    @commands.op("probe_wait")
    async def probe_wait(cmd: Mapping[str, object]) -> Mapping[str, object]:
        """The first commit after `after`, waiting up to `timeout` s for one."""
        acks, _ = probes[str(cmd["id"])]
        after, timeout = cmd["after"], cmd["timeout"]
        assert isinstance(after, float)
        assert isinstance(timeout, int | float)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in acks if t > after]
            if later:
                return {"event": "probe_ack", "at": later[0]}
            await asyncio.sleep(0.01)
        return {"event": "probe_ack", "at": None}

    @commands.op("probe_stop")
    async def probe_stop(cmd: Mapping[str, object]) -> Mapping[str, object]:
        acks, stop = probes.pop(str(cmd["id"]))
        stop.set()
        return {"event": "probed", "acks": acks}

    return commands


if __name__ == "__main__":
    copycat.run(main())
