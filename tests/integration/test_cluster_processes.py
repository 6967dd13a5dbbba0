"""Real node processes on loopback: every acknowledged proposal is delivered exactly
once to every subscriber, in one order, across a kill -9 and a restart."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from copycat import DataStructureId

if TYPE_CHECKING:
    from .cluster import NodeProcess, ProcessCluster

pytestmark = pytest.mark.chaos


def _commits(node: NodeProcess, since: int = 0) -> list[str]:
    out: list[str] = []
    for event in node.log[since:]:
        if event.get("event") == "load_snapshot":
            out = list(event["state"])  # type: ignore[arg-type]
        elif event.get("event") == "commit":
            out.append(str(event["data"]))
    return out


def _acked(nodes: list[NodeProcess]) -> set[str]:
    return {str(e["data"]) for n in nodes for e in n.log if e.get("event") == "acked"}


def _pump(nodes: list[NodeProcess], until, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for node in nodes:
            while node.next_event(0) is not None:
                pass
        if until():
            return
        time.sleep(0.05)
    summary = {
        n.node_id: (
            len(_acked([n])),
            len(_commits(n)),
            [e for e in n.log if e.get("event") in ("error", "propose_failed")][:3],
        )
        for n in nodes
    }
    raise AssertionError(f"the cluster did not converge in time: {summary}")


@pytest.mark.parametrize("size", [3, 5])
def test_processes_exactly_once_across_kill_and_restart(procs: ProcessCluster, size: int) -> None:
    # init: `size` nodes, one data structure with three replicas, a subscriber on each
    for node_id in range(1, size + 1):
        procs.add(node_id)
    procs.wait_members(size)
    n1, n2, n3 = (procs.nodes[i] for i in (1, 2, 3))
    others = [procs.nodes[i] for i in range(4, size + 1)]
    n1.send(op="allocate", replicas=3)
    ds = str(n1.wait_for("allocated")["id"])
    for node in (n1, n2, n3, *others):
        node.send(op="subscribe", id=ds)
        node.wait_for("subscribed")

    # act: all propose concurrently; node 3 is killed mid-stream and restarted
    for node in (n1, n2, n3, *others):
        node.send(op="propose", id=ds, prefix=f"n{node.node_id}-a", count=60, concurrency=8)
    _pump([n1, n2, n3], lambda: len(_acked([n1, n2, n3])) >= 60, 30)
    n3.kill()
    n3_before = _commits(n3)
    for node in (n1, n2):
        node.send(op="propose", id=ds, prefix=f"n{node.node_id}-b", count=40, concurrency=8)
    n3.log = []
    n3.start()
    n3.send(op="subscribe", id=ds)
    n3.wait_for("subscribed", 30)
    n3.send(op="propose", id=ds, prefix="n3-c", count=20, concurrency=4)

    live = [n1, n2, n3, *others]

    finished = {1: "n1-b", 2: "n2-b", 3: "n3-c", **{n.node_id: f"n{n.node_id}-a" for n in others}}

    def converged() -> bool:
        done = all(
            any(e.get("event") == "proposed" and e.get("prefix") == prefix for e in node.log)
            for node, prefix in ((procs.nodes[i], p) for i, p in finished.items())
        )
        acked = _acked(live)
        return done and all(acked <= set(_commits(n)) for n in live)

    _pump(live, converged, 120)

    # check: one order everywhere, every acknowledged proposal exactly once, nothing
    # that was never proposed
    sequences = [_commits(n) for n in live]
    c1 = sequences[0]
    shortest = min(len(c) for c in sequences)
    assert all(c[:shortest] == c1[:shortest] for c in sequences)
    assert n3_before == c1[: len(n3_before)]
    for seq in sequences:
        assert len(seq) == len(set(seq)), "a proposal was delivered twice"
    acked = _acked(live)
    # nodes 1 and 2 never stopped: all 200 of theirs were acknowledged, and node 3's 20
    # after its restart
    assert len(acked) >= 220
    assert acked <= set(c1)
    assert len(n3_before) > 0, "node 3 had delivered commits before it was killed"
    proposed_prefixes = ("n1-b", "n2-b", "n3-c", *(f"n{i}-a" for i in range(1, size + 1)))
    assert all(item.startswith(proposed_prefixes) for item in c1)


def test_new_subscriber_on_a_fourth_node_loads_a_snapshot_then_the_rest(
    procs: ProcessCluster,
) -> None:
    # init: three nodes snapshotting every 50 entries; 200 proposals committed
    for node_id in (1, 2, 3):
        procs.add(node_id, extra=["--snapshot-every=50", "--snapshot-keep=0"])
    procs.wait_members(3)
    n1 = procs.nodes[1]
    n1.send(op="allocate", replicas=3)
    ds = str(n1.wait_for("allocated")["id"])
    n1.send(op="subscribe", id=ds)
    n1.wait_for("subscribed")
    n1.send(op="propose", id=ds, prefix="early-", count=200, concurrency=8)
    n1.wait_for("proposed", 60)

    # act: a fourth node joins and subscribes; more proposals follow
    n4 = procs.add(4, extra=["--snapshot-every=50", "--snapshot-keep=0"])
    procs.wait_members(4)
    n4.send(op="subscribe", id=ds)
    n4.wait_for("subscribed", 30)
    n1.send(op="propose", id=ds, prefix="late-", count=20, concurrency=4)
    n1.wait_for("proposed", 60)
    _pump([n1, n4], lambda: set(_commits(n1)) <= set(_commits(n4)), 30)

    # check: node 4 started from a snapshot, then saw every later entry once, in order
    kinds = [e["event"] for e in n4.log if e.get("event") in ("load_snapshot", "commit")]
    assert kinds[0] == "load_snapshot"
    assert _commits(n4) == _commits(n1)


def test_concurrent_subscribers_to_a_new_id_start_one_group(procs: ProcessCluster) -> None:
    """Subscribing to an id no node hosts starts its group; three nodes doing so at the
    same moment end up in one group (placement picks the creator), one order for all."""
    for node_id in (1, 2, 3):
        procs.add(node_id)
    procs.wait_members(3)
    nodes = list(procs.nodes.values())
    ds = str(DataStructureId.new())
    for node in nodes:
        node.send(op="subscribe", id=ds)
    for node in nodes:
        node.wait_for("subscribed", 30)
    for node in nodes:
        node.send(op="propose", id=ds, prefix=f"n{node.node_id}-", count=20, concurrency=4)
    expected = {f"n{n}-{i}" for n in (1, 2, 3) for i in range(20)}
    _pump(nodes, lambda: all(set(_commits(n)) >= expected for n in nodes), 60)
    sequences = [_commits(n) for n in nodes]
    assert sequences[0] == sequences[1] == sequences[2]
    assert set(sequences[0]) == expected

    # more fresh ids, subscribed by all three at once: each is one group of three voters
    # (a late learner request never demotes a voter the creator placed)
    fresh = [str(DataStructureId.new()) for _ in range(4)]
    for ds in fresh:
        for node in nodes:
            node.send(op="subscribe", id=ds)
    for node in nodes:
        for _ in fresh:
            node.wait_for("subscribed", 30)

    def settled() -> bool:
        for node in nodes:
            node.send(op="status")
            groups = node.wait_for("status", 10)["groups"]
            for ds in fresh:
                group = groups.get(ds)  # type: ignore[union-attr]
                if group is None or sorted(group["voters"]) != [1, 2, 3] or group["learners"]:
                    return False
        return True

    _pump(nodes, settled, 30)
