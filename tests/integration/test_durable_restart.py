"""Durable node processes (`--durable`: LMDB fsyncs every commit, the production
setting) across kill -9 of a follower and then of the leader, each restarted on its
own data dir: every acknowledged value is delivered once, in one order, to a
subscriber on a restarted node.

Kill -9 keeps the kernel's page cache, so this test cannot see a missing fsync (see
tests/storage/test_durability.py, which can); it checks that the durable store, the
one production runs, recovers a node's raft state whole after a crash, and that each
node's store was opened with sync on, as LMDB itself reports (the node's `ready`
event carries it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .cluster import acked, check_streams, proposed, status, wait_until

if TYPE_CHECKING:
    from .cluster import NodeProcess, ProcessCluster

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

PER_PHASE = 20


def leader_of(nodes: list[NodeProcess], ds: str) -> int | None:
    for node in nodes:
        group = status(node).get(ds)
        if group is not None and group["role"] == "LEADER":
            return node.node_id
    return None


def applied(node: NodeProcess, ds: str) -> int:
    group = status(node).get(ds)
    return -1 if group is None else int(group["applied"])  # type: ignore[call-overload]


def some_acked(node: NodeProcess, prefix: str) -> bool:
    return sum(v.startswith(prefix) for v in acked(node)) >= PER_PHASE // 4


def restart(procs: ProcessCluster, node: NodeProcess) -> None:
    """Start the node again on its data dir, contacting every other node."""
    node.peers = [f"127.0.0.1:{n.gossip_port}" for n in procs.nodes.values() if n is not node]
    node.log = []
    node.start()
    assert node.ready["fsync"] is True  # a restart keeps `--durable`


def test_durable_nodes_keep_every_acknowledged_value_across_kill_9(
    procs: ProcessCluster,
) -> None:
    # init: three durable nodes, one group of three replicas, a subscriber on node 1
    for node_id in (1, 2, 3):
        procs.add(node_id, extra=["--durable"])
    procs.wait_members(3)
    nodes = list(procs.nodes.values())
    # `--durable` reached every store: LMDB says it was opened with sync on
    assert [node.ready["fsync"] for node in nodes] == [True, True, True]
    n1 = procs.nodes[1]
    n1.send(op="allocate", replicas=3)
    ds = str(n1.wait_for("allocated")["id"])
    n1.send(op="subscribe", id=ds)
    n1.wait_for("subscribed")
    n1.send(op="propose", id=ds, prefix="a-", count=PER_PHASE, concurrency=4)
    wait_until(lambda: proposed(n1, "a-"), 30, "the first proposals")
    wait_until(lambda: leader_of(nodes, ds) is not None, 20, "a leader")
    assert len(acked(n1)) == PER_PHASE

    # act 1: kill -9 a follower (not node 1), propose with two of three alive, restart it
    leader = leader_of(nodes, ds)
    assert leader is not None
    follower = procs.nodes[min(n for n in (2, 3) if n != leader)]
    n1.send(op="propose", id=ds, prefix="b-", count=PER_PHASE, concurrency=4)
    wait_until(lambda: some_acked(n1, "b-"), 30, "proposals before the follower's kill")
    follower.kill()
    wait_until(lambda: proposed(n1, "b-"), 30, "the proposals without the follower")
    restart(procs, follower)
    wait_until(
        lambda: applied(follower, ds) >= applied(procs.nodes[leader], ds) > 0,
        30,
        "the restarted follower caught up",
    )

    acknowledged = [v for v in acked(n1) if v.startswith(("a-", "b-"))]  # before a kill

    # act 2: kill -9 the leader's node while a live node that is not the leader
    # proposes; then restart it
    leader = leader_of(nodes, ds)
    assert leader is not None
    proposer = n1 if leader != 1 else follower
    if proposer is follower:
        follower.send(op="subscribe", id=ds)
        follower.wait_for("subscribed", 30)
    victim = procs.nodes[leader]
    proposer.send(op="propose", id=ds, prefix="c-", count=PER_PHASE, concurrency=4)
    wait_until(lambda: some_acked(proposer, "c-"), 30, "proposals before the leader's kill")
    victim.kill()
    wait_until(lambda: proposed(proposer, "c-"), 60, "the proposals without the leader")
    acknowledged += [v for v in acked(proposer) if v.startswith("c-")]
    restart(procs, victim)

    # check: a subscriber on each restarted node holds every acknowledged value once,
    # in the same order as the others
    assert len(acknowledged) >= 2 * PER_PHASE  # some "c-" may fail over the election
    for node in {follower.node_id: follower, victim.node_id: victim}.values():
        if node is not proposer:
            node.send(op="subscribe", id=ds)
            node.wait_for("subscribed", 30)
    streams = check_streams(list(procs.nodes.values()), ds, set(acknowledged))
    assert {follower.node_id, victim.node_id} <= set(streams)

    # act 3: kill -9 every node at once and restart them all: no peer remembers
    # anything, so all that survives is what each store wrote
    for node in nodes:
        node.kill()
    for node in nodes:
        restart(procs, node)
    for node in nodes:
        node.send(op="subscribe", id=ds)
        node.wait_for("subscribed", 30)

    # check: every subscriber again holds every acknowledged value once, in one order
    streams = check_streams(nodes, ds, set(acknowledged))
    assert set(streams) == {1, 2, 3}
