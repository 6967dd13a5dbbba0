"""A CopyCat node in its own process, driven by JSON lines on stdin, reporting JSON
lines on stdout. Used by the multi-process integration tests; not a public tool.

Commands: {"op": "members"}, {"op": "allocate", "replicas": n} (n optional),
{"op": "subscribe", "id": ds}, {"op": "propose", "prefix": p, "count": n,
"concurrency": c}, {"op": "status"}, {"op": "leave", "timeout": s}, {"op": "exit"}.
Events: ready, members, allocated, subscribed, commit (data), load_snapshot, acked,
propose_failed, status, left, error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

import copycat
from copycat._config import Config
from copycat._node import CopyCat, Subscription
from copycat.errors import CopyCatError
from copycat.host import LOAD_SNAPSHOT


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def consume(sub: Subscription, state: list[str]) -> None:
    async for item in sub.commits():
        if item is LOAD_SNAPSHOT:
            loaded = (await sub.load_snapshot()).decode()
            state[:] = loaded.split("|") if loaded else []
            emit(event="load_snapshot", state=state)
        else:
            assert isinstance(item, bytes)
            state.append(item.decode())
            emit(event="commit", data=item.decode())


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
                emit(event="acked", data=data)
            except CopyCatError as exc:
                emit(event="propose_failed", data=data, error=type(exc).__name__)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    emit(event="proposed", prefix=prefix)


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
    )
    subs: dict[str, Subscription] = {}
    tasks: set[asyncio.Task[None]] = set()
    async with CopyCat(config) as cc:
        emit(event="ready", node_id=cc.node_id, pid=os.getpid())
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            op = cmd["op"]
            try:
                if op == "members":
                    emit(event="members", count=len(cc.members()))
                elif op == "allocate":
                    ds = await cc.allocate_data_structure(replicas=cmd.get("replicas"))
                    emit(event="allocated", id=str(ds))
                elif op == "subscribe":
                    state: list[str] = []
                    sub = await cc.subscribe(
                        cmd["id"], lambda state=state: "|".join(state).encode()
                    )
                    subs[cmd["id"]] = sub
                    task = loop.create_task(consume(sub, state))
                    tasks.add(task)
                    emit(event="subscribed", id=cmd["id"])
                elif op == "propose":
                    sub = subs[cmd["id"]]
                    task = loop.create_task(
                        propose_many(sub, cmd["prefix"], cmd["count"], cmd.get("concurrency", 4))
                    )
                    tasks.add(task)
                elif op == "status":
                    emit(
                        event="status",
                        groups={
                            g.data_structure_id: {
                                "role": g.raft_role.upper(),
                                "leader": g.leader_id,
                                "voters": list(g.voters),
                                "learners": list(g.learners),
                                "applied": g.applied,
                            }
                            for g in cc.groups()
                        },
                        counters=cc.counters(),
                    )
                elif op == "leave":
                    await cc.leave(cmd.get("timeout"))
                    emit(event="left")
                    break
                elif op == "exit":
                    break
            except (CopyCatError, ValueError) as exc:
                emit(event="error", op=op, error=type(exc).__name__, message=str(exc))
    emit(event="stopped")
    sys.stdout.flush()
    os._exit(0)  # kinship 0.4 may crash during interpreter teardown


if __name__ == "__main__":
    copycat.run(main())
