"""One real single-node `copycat.sync.CopyCat` (loopback, ports 0) whose queries and misuse
errors are set beside those of its own asyncio node, for test_parity.py; not collected
by pytest (no test_ prefix).

    python -m tests.sync.parity_node DATA_DIR

It reads `node_id`, `address`, `gossip_address`, `members()`, `groups()` (after a
subscription) and `counters()` through the facade, and the same through the facade's
underlying `copycat.CopyCat` on its loop thread; then it commits each misuse on both
(before start, a second start, a closed subscription, a provider that is not callable,
after shutdown, a start after shutdown) and records what each raised. It prints one line
`parity <json>`. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from typing import TYPE_CHECKING, TypeVar

import copycat
import copycat.sync
from tests.sync._subprocess import main_then_exit

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from copycat._node import GroupInfo
    from copycat.membership import MemberInfo
    from copycat.sync import AsyncNode

T = TypeVar("T")

WAIT_S = 20.0

NOT_CALLABLE = 42
"""Given as a snapshot provider: not a callable."""

QUERY_METHODS = ("members", "groups", "counters", "metrics", "status", "metric_counters")
"""The queries that refuse (raise) while the node is not running."""


def _config(data_dir: str) -> copycat.Config:
    return copycat.Config.local(
        data_dir=data_dir, peers_to_contact=[], hostname="127.0.0.1", node_id=1
    )


def _raised(action: Callable[[], object]) -> list[str]:
    """[qualified exception class, message] of what `action` raised, or ["no error", ...]."""
    try:
        result = action()
    except Exception as exc:
        cls = type(exc)
        return [f"{cls.__module__}.{cls.__qualname__}", str(exc)]
    return ["no error", repr(result)]


def _members(members: tuple[MemberInfo, ...]) -> list[dict[str, object]]:
    return [{**dataclasses.asdict(m), "state": m.state.value} for m in members]


def _groups(groups: tuple[GroupInfo, ...]) -> list[dict[str, object]]:
    return [dataclasses.asdict(g) for g in groups]


def _queries(node: copycat.sync.CopyCat | AsyncNode) -> dict[str, object]:
    """What `node` answers, less what moves on its own (counter values, commit indexes)."""
    counters = node.counters()
    status = node.status()
    return {
        "node_id": node.node_id,
        "address": node.address,
        "gossip_address": node.gossip_address,
        "http_address": node.http_address,
        "members": _members(node.members()),
        "groups": _groups(node.groups()),
        "counter_types": sorted({type(v).__name__ for v in counters.values()}),
        "counter_names": sorted(counters),
        "metrics_name_copycat": b"copycat_" in node.metrics(),
        "status_node": status["node"],
        "status_members": status["members"],
        "status_group_ids": [g["data_structure_id"] for g in status["groups"]],
        "readiness": node.readiness(),
        "metric_counter_layers": sorted(node.metric_counters()),
    }


def _not_running(
    cc: copycat.sync.CopyCat, node: copycat.CopyCat | AsyncNode
) -> dict[str, dict[str, object]]:
    """The queries that answer, rather than refuse, while the node is not running."""
    return {
        "http_address": {"sync": cc.http_address, "asyncio": node.http_address},
        "readiness": {"sync": cc.readiness(), "asyncio": node.readiness()},
    }


def main() -> None:
    config = _config(sys.argv[1])
    misuse: dict[str, dict[str, list[str]]] = {}
    cc = copycat.sync.CopyCat(config)
    unstarted = copycat.CopyCat(config)  # never started: it opens nothing
    for name in ("address", "gossip_address"):
        misuse[f"before start: {name}"] = {
            "sync": _raised(lambda name=name: getattr(cc, name)),
            "asyncio": _raised(lambda name=name: getattr(unstarted, name)),
        }
    for name in QUERY_METHODS:
        misuse[f"before start: {name}()"] = {
            "sync": _raised(getattr(cc, name)),
            "asyncio": _raised(getattr(unstarted, name)),
        }
    node_id_before = {"sync": cc.node_id, "asyncio": unstarted.node_id}
    before_start = _not_running(cc, unstarted)

    cc.start(timeout=WAIT_S)
    node = cc._node  # the facade's own asyncio node
    assert node is not None

    def on_loop(make: Callable[[], Coroutine[object, object, T]]) -> T:
        """Run `make()` on the node's loop thread, not through the facade's calls."""
        return asyncio.run_coroutine_threadsafe(make(), cc._loop.loop).result(WAIT_S)

    async def read_node() -> dict[str, object]:
        return _queries(node)

    try:
        ds_id = cc.new_data_structure_id()
        sub = cc.subscribe(ds_id, lambda: b"")
        sub.propose(b"x", timeout=WAIT_S)
        through_sync = _queries(cc)
        through_asyncio = on_loop(read_node)

        async def start_again() -> None:
            await node.start()

        misuse["start twice"] = {
            "sync": _raised(lambda: cc.start(timeout=WAIT_S)),
            "asyncio": _raised(lambda: on_loop(start_again)),
        }
        other_id = cc.new_data_structure_id()

        async def subscribe_not_callable() -> object:
            return await node.subscribe(other_id, NOT_CALLABLE)  # type: ignore[arg-type]

        misuse["subscribe with a provider that is not callable"] = {
            "sync": _raised(lambda: cc.subscribe(other_id, NOT_CALLABLE)),  # type: ignore[arg-type]
            "asyncio": _raised(lambda: on_loop(subscribe_not_callable)),
        }
        inner = sub._inner
        sub.close(timeout=WAIT_S)

        async def propose_on_closed() -> None:
            await inner.propose(b"y")

        misuse["propose on a closed subscription"] = {
            "sync": _raised(lambda: sub.propose(b"y", timeout=WAIT_S)),
            "asyncio": _raised(lambda: on_loop(propose_on_closed)),
        }
    finally:
        cc.shutdown(timeout=WAIT_S)

    # The loop thread has ended: the asyncio node is read here, as its queries are plain
    # reads that refuse at once once it is shut down.
    for name in ("address", "gossip_address"):
        misuse[f"after shutdown: {name}"] = {
            "sync": _raised(lambda name=name: getattr(cc, name)),
            "asyncio": _raised(lambda name=name: getattr(node, name)),
        }
    for name in QUERY_METHODS:
        misuse[f"after shutdown: {name}()"] = {
            "sync": _raised(getattr(cc, name)),
            "asyncio": _raised(getattr(node, name)),
        }
    misuse["start after shutdown"] = {
        "sync": _raised(lambda: cc.start(timeout=WAIT_S)),
        "asyncio": _raised(lambda: asyncio.run(node.start())),
    }
    result = {
        "ds_id": str(ds_id),
        "not_running": {"before start": before_start, "after shutdown": _not_running(cc, node)},
        "node_id_before": node_id_before,
        "node_id_after": {"sync": cc.node_id, "asyncio": node.node_id},
        "sync": through_sync,
        "asyncio": through_asyncio,
        "misuse": misuse,
    }
    print("parity", json.dumps(result), flush=True)


if __name__ == "__main__":
    main_then_exit(main)
