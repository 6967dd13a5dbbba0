"""Leadership follows the writers across emulated long links: three node processes in
three data centers whose transports cross the WAN emulator (copycat.testing.wan) at
60 ms RTT. A writer on a follower's node gets the leadership of its group; two writers
alike in two other data centers then leave it where it is (no flapping); and every
acknowledged value is delivered once, in one order, on every subscriber."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from copycat.testing.wan import WanEmulator, format_routes, routes_for

from .cluster import NodeProcess, acked, check_streams, free_ports, proposed, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

FOLLOW_AFTER_S = 1.5
"""The test's `leader_follow_after_s`: 3 windows of 0.5 s, a cooldown of 6 s."""


@pytest.fixture
def wan() -> Iterator[WanEmulator]:
    with WanEmulator(seed=13) as emulator:
        yield emulator


def full_status(node: NodeProcess) -> dict[str, object]:
    node.send(op="status")
    return node.wait_for("status", 20)


def leader_of(node: NodeProcess, ds: str) -> int:
    groups = full_status(node)["groups"]
    assert isinstance(groups, dict)
    return int(groups[ds]["leader"]) if ds in groups else 0


def moves(node: NodeProcess) -> int:
    counters = full_status(node)["counters"]
    assert isinstance(counters, dict)
    return int(counters.get("leader_moves_followed", 0))


def test_leadership_moves_to_the_writing_data_center_and_stays_under_two_alike(
    tmp_path: Path, wan: WanEmulator
) -> None:
    ids = (1, 2, 3)
    ports = free_ports(6)
    transports = {i: ("127.0.0.1", ports[2 * i - 2]) for i in ids}
    routes = routes_for(wan, transports)
    wan.set_rtt(ids, 0.06)
    nodes: dict[int, NodeProcess] = {}
    try:
        for i in ids:
            nodes[i] = NodeProcess(
                node_id=i,
                data_dir=tmp_path / f"node{i}",
                port=ports[2 * i - 2],
                gossip_port=ports[2 * i - 1],
                peers=[f"127.0.0.1:{ports[1]}"] if i != 1 else [],
                extra=[
                    f"--data-center=dc{i}",
                    f"--routes={format_routes(routes[i])}",
                    f"--follow-after={FOLLOW_AFTER_S}",
                ],
            )
            nodes[i].start()
        for node in nodes.values():
            wait_until(
                lambda node=node: node.send(op="members") or node.wait_for("members")["count"] == 3,
                30,
                f"node {node.node_id} sees 3 members",
            )
        nodes[1].send(op="allocate", replicas=3)
        ds = str(nodes[1].wait_for("allocated", 60)["id"])
        for node in nodes.values():
            node.send(op="subscribe", id=ds)
            node.wait_for("subscribed", 60)
        wait_until(lambda: leader_of(nodes[1], ds) in ids, 30, "a leader")
        first = leader_of(nodes[1], ds)
        writer = next(i for i in ids if i != first)

        # One writer on a follower's node: leadership comes to it, and only once.
        nodes[writer].send(op="propose", id=ds, prefix="w-", count=1500, concurrency=8)
        wait_until(lambda: leader_of(nodes[writer], ds) == writer, 90, "leadership follows")
        wait_until(lambda: moves(nodes[first]) == 1, 10, "the move is counted")
        assert wan.relayed[(writer, first)] > 0  # raft crossed the emulated links
        wait_until(lambda: proposed(nodes[writer], "w-"), 120, "the lone writer is done")
        assert leader_of(nodes[writer], ds) == writer  # a lone writer keeps it

        # Two writers alike in the two other data centers: it stays where it is.
        others = [i for i in ids if i != writer]
        for i in others:
            nodes[i].send(op="propose", id=ds, prefix=f"o{i}-", count=1200, concurrency=8)
        time.sleep(8 * FOLLOW_AFTER_S)  # past the cooldown, both still writing
        assert not any(proposed(nodes[i], f"o{i}-") for i in others)
        for i in ids:
            assert leader_of(nodes[i], ds) == writer
        assert sum(moves(n) for n in nodes.values()) == 1
        for i in others:
            wait_until(lambda i=i: proposed(nodes[i], f"o{i}-"), 120, f"node {i} is done")

        wanted = {value for node in nodes.values() for value in acked(node)}
        assert len(wanted) == 1500 + 2 * 1200  # nothing failed
        check_streams(list(nodes.values()), ds, wanted)
    finally:
        for node in nodes.values():
            node.kill()
