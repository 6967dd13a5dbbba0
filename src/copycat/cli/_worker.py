# One node process of `copycat demo`: a CopyCat node with the demo's hashmap, driven by
# JSON lines on stdin and answering with JSON lines on stdout.
#
# Protocol (one command at a time; every command gets exactly one answer):
#   {"op": "members"}                         -> {"event": "reply", "op", "count"}
#   {"op": "allocate", "replicas": n}         -> {..., "id"}
#   {"op": "subscribe", "id": ds}             -> {...}
#   {"op": "write", "puts": [[k, v], ...], "deletes": [k, ...], "concurrency": c}
#                                             -> {..., "acked", "failed": [messages],
#                                                 "elapsed_s", "slowest_s"}
#   {"op": "state", "keys": [k, ...]}         -> {..., "size", "digest", "values",
#                                                 "commits", "snapshots_loaded"}
#   {"op": "exit"} or end of stdin            -> shut down, {"event": "stopped"}, exit 0
# An answer to a failed command is {"event": "error", "op", "message"}. Unprompted:
# {"event": "ready", "node_id", "pid"} once the node runs, and {"event": "load_snapshot",
# "size"} whenever the subscriber reloads its map from a snapshot.
#
# Puts are proposed concurrently, then deletes (deletes name keys whose puts were
# acknowledged earlier), so the outcome does not depend on the order of concurrent puts.
#
# The command loop (reading, dispatch, error lines, exit) is `copycat.testing.worker`'s;
# this module keeps the demo's ops and flags.
#
# What must not: print anything else on stdout (logs go to stderr), or end the process
# other than through `_runtime.exit_process()`.
"""A demo node process (internal to `copycat demo`; not a public tool)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from copycat.cli._hashmap import HashMap, delete_command, put_command
from copycat.cli._runtime import StartError, exit_process, serve
from copycat.errors import CopyCatError
from copycat.testing.worker import Commands, emit
from copycat.transport import run as run_loop

if TYPE_CHECKING:
    from collections.abc import Mapping

    from copycat import CopyCat, Subscription

__all__: Final = ["main"]

log = logging.getLogger("copycat.cli.worker")


@dataclass
class _State:
    cc: CopyCat
    map: HashMap = field(default_factory=HashMap)
    sub: Subscription | None = None
    commits: int = 0
    snapshots_loaded: int = 0
    malformed: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


async def _consume(state: _State, sub: Subscription) -> None:
    from copycat import LoadSnapshot

    async for item in sub.commits():
        if isinstance(item, LoadSnapshot):
            state.map.restore(await sub.load_snapshot())
            state.snapshots_loaded += 1
            emit(event="load_snapshot", size=len(state.map))
            continue
        state.commits += 1
        try:
            state.map.apply(item)
        except ValueError as exc:
            state.malformed += 1
            log.warning("skipped a commit that is not a hashmap command: %s", exc)


async def _write(
    sub: Subscription, commands: list[bytes], concurrency: int, latencies: list[float]
) -> list[str]:
    """Propose `commands` with `concurrency` in flight; returns the failures and appends
    each proposal's latency (seconds) to `latencies`."""
    queue = list(reversed(commands))
    failed: list[str] = []
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while queue:
            command = queue.pop()
            began = loop.time()
            try:
                await sub.propose(command)
            except CopyCatError as exc:
                failed.append(f"{type(exc).__name__}: {exc}")
            latencies.append(loop.time() - began)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return failed


def _strs(cmd: Mapping[str, object], key: str) -> list[str]:
    value = cmd.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key!r} must be a list of strings")
    return [str(v) for v in value]


def _pairs(cmd: Mapping[str, object], key: str) -> list[tuple[str, str]]:
    value = cmd.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list of [key, value] pairs")
    pairs: list[tuple[str, str]] = []
    for item in value:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)
        ):
            raise ValueError(f"{key!r} must be a list of [key, value] pairs")
        pairs.append((str(item[0]), str(item[1])))
    return pairs


def _int(cmd: Mapping[str, object], key: str, default: int) -> int:
    value = cmd.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key!r} must be an integer")
    return value


async def _serve_commands(cc: CopyCat) -> None:
    state = _State(cc=cc)
    commands = Commands(
        reply=lambda op, answer: {"event": "reply", "op": op, **answer},
        error=lambda op, exc: {
            "event": "error",
            "op": op,
            "message": f"{type(exc).__name__}: {exc}",
        },
    )

    @commands.op("members")
    async def members(cmd: Mapping[str, object]) -> Mapping[str, object]:
        del cmd
        return {"count": len(cc.members())}

    @commands.op("allocate")
    async def allocate(cmd: Mapping[str, object]) -> Mapping[str, object]:
        ds = await cc.allocate_data_structure(replicas=_int(cmd, "replicas", 3))
        return {"id": str(ds)}

    @commands.op("subscribe")
    async def subscribe(cmd: Mapping[str, object]) -> Mapping[str, object]:
        ds_text = cmd.get("id")
        if not isinstance(ds_text, str):
            raise ValueError("'id' must be a data structure id")
        sub = await cc.subscribe(ds_text, state.map.snapshot)
        state.sub = sub
        task = asyncio.get_running_loop().create_task(_consume(state, sub))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        return {}

    @commands.op("write")
    async def write(cmd: Mapping[str, object]) -> Mapping[str, object]:
        if state.sub is None:
            raise ValueError("subscribe first")
        puts = [put_command(k, v) for k, v in _pairs(cmd, "puts")]
        deletes = [delete_command(k) for k in _strs(cmd, "deletes")]
        concurrency = _int(cmd, "concurrency", 16)
        latencies: list[float] = []
        began = asyncio.get_running_loop().time()
        failed = await _write(state.sub, puts, concurrency, latencies)
        failed += await _write(state.sub, deletes, concurrency, latencies)
        return {
            "acked": len(puts) + len(deletes) - len(failed),
            "failed": failed[:5],
            "elapsed_s": asyncio.get_running_loop().time() - began,
            "slowest_s": max(latencies, default=0.0),
        }

    @commands.op("state")
    async def state_op(cmd: Mapping[str, object]) -> Mapping[str, object]:
        return {
            "size": len(state.map),
            "digest": state.map.digest(),
            "values": {k: state.map.get(k) for k in _strs(cmd, "keys")},
            "commits": state.commits,
            "snapshots_loaded": state.snapshots_loaded,
            "malformed": state.malformed,
        }

    emit(event="ready", node_id=cc.node_id, pid=os.getpid())
    await commands.serve()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m copycat.cli._worker")
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gossip-port", type=int, required=True)
    parser.add_argument("--peers", default="")
    parser.add_argument("--snapshot-every-entries", type=int, default=50)
    parser.add_argument("--snapshot-keep-entries", type=int, default=20)
    args = parser.parse_args(argv)
    from copycat import Config

    config = Config.local(
        node_id=args.node_id,
        data_dir=args.data_dir,
        port=args.port,
        gossip_port=args.gossip_port,
        peers_to_contact=[p for p in args.peers.split(",") if p],
        snapshot_every_entries=args.snapshot_every_entries,
        snapshot_keep_entries=args.snapshot_keep_entries,
    )
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    code = 0
    try:
        run_loop(serve(config, _serve_commands))
        emit(event="stopped")
    except StartError as exc:
        emit(event="error", op="start", message=str(exc))
        code = 1
    except TimeoutError:
        emit(event="error", op="exit", message="the node did not shut down in time")
        code = 1
    except KeyboardInterrupt:
        code = 130
    except Exception:
        log.exception("the demo node failed")
        code = 1
    exit_process(code)


if __name__ == "__main__":
    main()
