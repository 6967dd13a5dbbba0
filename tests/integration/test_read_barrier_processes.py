"""Real node processes on loopback: a read barrier sees every acknowledged write
(issue 15), also across a kill -9 of the group's leader.

Four nodes, one data structure with three voters, a subscriber on every node. Two
writer nodes propose; a reader node (not the leader; a learner when placement left it
out of the voters) runs read barriers one after another. The history checked:

* each writer records (value, when its `propose` returned);
* the reader records, per barrier, (when it started, when it ended, the values its
  subscriber's state held when it returned).

Linearizability of the barrier: every value acknowledged before a barrier started is
in that barrier's state. Times are `time.monotonic()` of each process, one clock for
the whole machine (Linux CLOCK_MONOTONIC).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from .cluster import status, wait_until

if TYPE_CHECKING:
    from .cluster import NodeProcess, ProcessCluster

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]


def _events(node: NodeProcess, name: str) -> list[dict[str, object]]:
    node.drain()
    return [e for e in node.log if e.get("event") == name]


def _leader(nodes: list[NodeProcess], ds: str) -> int:
    for node in nodes:
        group = status(node).get(ds)
        if group is not None and group["role"] == "LEADER":
            return node.node_id
    return 0


def _check_history(writers: list[NodeProcess], reader: NodeProcess) -> int:
    """Every value acknowledged before a barrier started is in its state; returns the
    number of barriers checked."""
    acks = [
        (float(e["t"]), str(e["data"]))  # type: ignore[arg-type]
        for w in writers
        for e in _events(w, "acked")
    ]
    acks.sort()
    barriers = _events(reader, "barrier")
    for b in barriers:
        start = float(b["start"])  # type: ignore[arg-type]
        seen = set(b["values"])  # type: ignore[call-overload]
        missing = [value for t, value in acks if t < start and value not in seen]
        assert not missing, (
            f"a barrier started at {start} (ended {b['end']}, position {b['position']}) "
            f"missed {len(missing)} values acknowledged before it: {missing[:5]}"
        )
    return len(barriers)


def test_a_read_barrier_observes_every_write_acknowledged_before_it(
    procs: ProcessCluster,
) -> None:
    # init: four nodes, three voters, a subscriber on each
    for node_id in range(1, 5):
        procs.add(node_id)
    procs.wait_members(4)
    nodes = list(procs.nodes.values())
    nodes[0].send(op="allocate", replicas=3)
    ds = str(nodes[0].wait_for("allocated")["id"])
    for node in nodes:
        node.send(op="subscribe", id=ds)
        node.wait_for("subscribed", 30)
    leader_id = 0
    wait_until(lambda: bool(_leader(nodes, ds)), 20, "a leader")
    leader_id = _leader(nodes, ds)
    groups = status(nodes[0])
    voters = set(groups[ds]["voters"])  # type: ignore[call-overload]
    # the reader is not the leader (it must survive the kill), a learner if one exists
    candidates = sorted(
        (n for n in nodes if n.node_id != leader_id), key=lambda n: n.node_id in voters
    )
    reader = candidates[0]
    writers = [n for n in nodes if n is not reader][:2]
    if not any(w.node_id == leader_id for w in writers):
        writers = [next(n for n in nodes if n.node_id == leader_id), writers[0]]

    # act, phase 1: both writers write while the reader runs barriers
    for w in writers:
        w.send(op="propose", id=ds, prefix=f"n{w.node_id}-a", count=120, concurrency=4)
    reader.send(op="barriers", id=ds, count=25, pause=0.05)
    wait_until(lambda: len(_events(reader, "barriers_done")) == 1, 45, "first barriers")

    # phase 2: kill -9 the leader in the middle of writes and barriers
    survivor = next(w for w in writers if w.node_id != leader_id)
    survivor.send(op="propose", id=ds, prefix=f"n{survivor.node_id}-b", count=120, concurrency=4)
    reader.send(op="barriers", id=ds, count=30, pause=0.05)
    wait_until(lambda: len(_events(reader, "barrier")) >= 30, 30, "barriers before the kill")
    killed = procs.nodes[leader_id]
    killed_at = time.monotonic()
    killed.kill()
    wait_until(lambda: len(_events(reader, "barriers_done")) == 2, 60, "barriers after the kill")

    # check
    checked = _check_history(writers, reader)
    after_kill = [b for b in _events(reader, "barrier") if float(b["start"]) > killed_at]  # type: ignore[arg-type]
    failed = _events(reader, "barrier_failed")
    assert checked >= 40, f"only {checked} barriers returned; failures: {failed[:3]}"
    assert after_kill, f"no barrier returned after the leader was killed: {failed[:3]}"
    acked_before_last = [
        e
        for w in writers
        for e in _events(w, "acked")
        if float(e["t"]) < float(after_kill[-1]["start"])  # type: ignore[arg-type]
    ]
    assert acked_before_last, "the barriers checked nothing"
