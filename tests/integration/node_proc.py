"""A CopyCat node in its own process, driven by JSON lines on stdin, reporting JSON
lines on stdout. Used by the multi-process integration tests; not a public tool.

Commands: {"op": "members"}, {"op": "allocate", "replicas": n} (n optional),
{"op": "subscribe", "id": ds}, {"op": "propose", "prefix": p, "count": n,
"concurrency": c}, {"op": "status"}, {"op": "leave", "timeout": s},
{"op": "barriers", "id": ds, "count": n, "pause": s},
{"op": "cut", "peers": [ids]} (the transport's fault hooks: nothing flows between this
node and those, gossip unaffected), {"op": "heal"}, {"op": "exit"}.
Events: ready, members, allocated, subscribed, commit (id, data), load_snapshot (id,
state), sub_error (id, error, message: a line of the subscription's errors()), acked,
propose_failed, proposed, barrier (start, end, position, values), barrier_failed,
barriers_done, status, cut, healed, left, error, stopped. The command loop (and members,
allocate) is copycat.testing.worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

import copycat
from copycat import LOAD_SNAPSHOT
from copycat._config import Config
from copycat._node import CopyCat, Subscription
from copycat.errors import CopyCatError
from copycat.storage import LmdbLogStore
from copycat.testing.wan import parse_routes, redirect_world
from copycat.testing.worker import Commands, add_node_ops, emit

if TYPE_CHECKING:
    from collections.abc import Mapping

    from copycat.transport import FaultHooks


async def consume(sub: Subscription, state: list[str]) -> None:
    ds = str(sub.data_structure_id)
    async for item in sub.commits():
        if item is LOAD_SNAPSHOT:
            loaded = (await sub.load_snapshot()).decode()
            state[:] = loaded.split("|") if loaded else []
            emit(event="load_snapshot", id=ds, state=state)
        else:
            assert isinstance(item, bytes)
            state.append(item.decode())
            emit(event="commit", id=ds, data=item.decode())


async def report_errors(sub: Subscription) -> None:
    ds = str(sub.data_structure_id)
    async for error in sub.errors():
        emit(event="sub_error", id=ds, error=type(error).__name__, message=str(error))


async def propose_many(sub: Subscription, prefix: str, count: int, concurrency: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            data = f"{prefix}{i}"
            try:
                await sub.propose(data.encode())
                emit(event="acked", data=data, t=time.monotonic())
            except CopyCatError as exc:
                emit(event="propose_failed", data=data, error=type(exc).__name__)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    emit(event="proposed", prefix=prefix)


async def read_barriers(sub: Subscription, state: list[str], count: int, pause_s: float) -> None:
    """`count` read barriers one after another; each reports when it started and ended
    (time.monotonic(), one clock for every process of the machine) and the values the
    subscriber's state held when it returned."""
    for _ in range(count):
        started = time.monotonic()
        try:
            position = await sub.read_barrier()
        except CopyCatError as exc:
            emit(event="barrier_failed", error=type(exc).__name__, message=str(exc))
        else:
            emit(
                event="barrier",
                start=started,
                end=time.monotonic(),
                position=position,
                values=list(state),
            )
        await asyncio.sleep(pause_s)
    emit(event="barriers_done")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gossip-port", type=int, required=True)
    parser.add_argument("--peers", default="")
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--data-center", default="dc1")
    parser.add_argument("--rack", default="rack1")
    parser.add_argument("--snapshot-every", type=int, default=10_000)
    parser.add_argument("--snapshot-keep", type=int, default=1_000)
    parser.add_argument("--repair-grace", type=float, default=10.0)
    parser.add_argument("--proposal-timeout", type=float, default=30.0)
    parser.add_argument("--durable", action="store_true", help="fsync every commit")
    parser.add_argument("--routes", default="", help="node=host:port,...: WAN emulator links")
    parser.add_argument("--follow-after", type=float, default=0.0, help="leader follows writers")
    parser.add_argument("--http-port", type=int, default=None, help="metrics and status")
    parser.add_argument("--node-name", default=None, help="the name in logs and status")
    args = parser.parse_args()
    # stderr goes to a file beside the data dir (see cluster.py): keep the node's story
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("copycat").setLevel(logging.INFO)
    config = Config.local(
        data_dir=args.data_dir,
        port=args.port,
        gossip_port=args.gossip_port,
        peers_to_contact=[p for p in args.peers.split(",") if p],
        node_id=args.node_id,
        data_center=args.data_center,
        rack=args.rack,
        snapshot_every_entries=args.snapshot_every,
        snapshot_keep_entries=args.snapshot_keep,
        repair_grace_s=args.repair_grace,
        proposal_timeout_s=args.proposal_timeout,
        durable=args.durable,
        leader_follows_writers=args.follow_after > 0,
        leader_follow_after_s=args.follow_after or 15.0,
        http_port=args.http_port,
        node_name=args.node_name,
    )
    async with CopyCat(config, world=redirect_world(parse_routes(args.routes))) as cc:
        emit(
            event="ready",
            node_id=cc.node_id,
            pid=os.getpid(),
            fsync=store_syncs(cc),
            http=cc.http_address,
        )
        await node_commands(cc).serve()
    emit(event="stopped")
    sys.stdout.flush()


def store_syncs(cc: CopyCat) -> bool:
    """Whether the node's LMDB environment was opened with sync on, as LMDB itself
    reports it (test access to a private part: what `--durable` must reach)."""
    host = cc._host
    assert host is not None
    store = host.store
    assert isinstance(store, LmdbLogStore), type(store)
    return bool(store._env.flags()["sync"])


def faults(cc: CopyCat) -> FaultHooks:
    """The fault hooks of the node's transport (test access to a private part)."""
    endpoint = cc._endpoint
    assert endpoint is not None
    return endpoint.faults


def node_commands(cc: CopyCat) -> Commands:
    """The ops of this node: members and allocate (shared), subscribe, propose, status,
    leave. Errors are answered as `{"event": "error", "op", "error", "message"}`."""
    subs: dict[str, Subscription] = {}
    states: dict[str, list[str]] = {}
    tasks: set[asyncio.Task[None]] = set()
    commands = Commands()
    add_node_ops(commands, cc)

    @commands.op("subscribe")
    async def subscribe(cmd: Mapping[str, object]) -> Mapping[str, object]:
        ds = str(cmd["id"])
        state: list[str] = []
        sub = await cc.subscribe(ds, lambda: "|".join(state).encode())
        subs[ds] = sub
        states[ds] = state
        loop = asyncio.get_running_loop()
        tasks.add(loop.create_task(consume(sub, state)))
        tasks.add(loop.create_task(report_errors(sub)))
        return {"event": "subscribed", "id": ds}

    @commands.op("cut")
    async def cut(cmd: Mapping[str, object]) -> Mapping[str, object]:
        peers = cmd["peers"]
        assert isinstance(peers, list)
        for peer in peers:
            assert isinstance(peer, int)
            faults(cc).cut(cc.node_id, peer)
        return {"event": "cut", "peers": peers}

    @commands.op("heal")
    async def heal(cmd: Mapping[str, object]) -> Mapping[str, object]:
        del cmd
        faults(cc).heal_all()
        return {"event": "healed"}

    @commands.op("propose")
    async def propose(cmd: Mapping[str, object]) -> None:
        sub = subs[str(cmd["id"])]
        count, concurrency = cmd["count"], cmd.get("concurrency", 4)
        assert isinstance(count, int)
        assert isinstance(concurrency, int)
        task = propose_many(sub, str(cmd["prefix"]), count, concurrency)
        tasks.add(asyncio.get_running_loop().create_task(task))

    @commands.op("barriers")
    async def barriers(cmd: Mapping[str, object]) -> None:
        ds = str(cmd["id"])
        count, pause_s = cmd["count"], cmd.get("pause", 0.05)
        assert isinstance(count, int)
        assert isinstance(pause_s, int | float)
        task = read_barriers(subs[ds], states[ds], count, float(pause_s))
        tasks.add(asyncio.get_running_loop().create_task(task))

    @commands.op("status")
    async def status(cmd: Mapping[str, object]) -> Mapping[str, object]:
        del cmd
        groups = {
            g.data_structure_id: {
                "role": g.raft_role.upper(),
                "leader": g.leader_id,
                "voters": list(g.voters),
                "learners": list(g.learners),
                "applied": g.applied,
                "split_with": list(g.split_with),
                "refusing_writes": g.refusing_writes,
            }
            for g in cc.groups()
        }
        return {"event": "status", "groups": groups, "counters": cc.counters()}

    @commands.op("leave")
    async def leave(cmd: Mapping[str, object]) -> Mapping[str, object]:
        timeout = cmd.get("timeout")
        assert timeout is None or isinstance(timeout, (int, float))
        await cc.leave(timeout)
        commands.stop()
        return {"event": "left"}

    return commands


if __name__ == "__main__":
    copycat.run(main())
