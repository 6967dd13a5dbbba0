"""One group per id, with real processes: a node told to join a cluster that nobody
answers for creates nothing (its subscribe fails with ClusterUnreachableError) while the
cluster creates the group; once it reaches the cluster it joins that one group, and every
acknowledged value reaches every subscriber."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .cluster import (
    NodeProcess,
    ProcessCluster,
    acked,
    delivered,
    free_ports,
    proposed,
    status,
    wait_until,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

DS = "01CFR5R4JJE9KNRAJFFEAQ2SAJ"


def test_a_node_that_reaches_nobody_creates_no_second_group(
    procs: ProcessCluster, tmp_path: Path
) -> None:
    # init: node 3 is told to join through node 1's gossip port, before node 1 runs
    port1, gossip1 = free_ports(2)
    port3, gossip3 = free_ports(2)
    extra = ["--proposal-timeout=3"]
    n3 = NodeProcess(3, tmp_path / "node3", port3, gossip3, [f"127.0.0.1:{gossip1}"], extra)
    procs.nodes[3] = n3
    n3.start()

    # act: node 3 subscribes to an id while it reaches nobody
    n3.send(op="subscribe", id=DS)
    first = n3.wait_for_any({"subscribed", "error"}, 30)

    # check: refused with a typed error, and nothing created
    assert first.get("event") == "error", f"node 3 served a subscribe alone: {first}"
    assert first["error"] == "ClusterUnreachableError"
    assert status(n3) == {}

    # act: the cluster starts (node 1 with no peers: a new cluster) and creates the group
    n1 = NodeProcess(1, tmp_path / "node1", port1, gossip1, [], extra)
    procs.nodes[1] = n1
    n1.start()
    n2 = procs.add(2, extra=extra)
    n1.send(op="subscribe", id=DS)
    n1.wait_for("subscribed", 30)
    n1.send(op="propose", id=DS, prefix="one-", count=40, concurrency=2)
    procs.wait_members(3, 60)  # node 3's rejoin loop reaches node 1

    # act: node 3 subscribes again, now that it sees its cluster
    n3.send(op="subscribe", id=DS)
    n3.wait_for("subscribed", 30)
    n3.send(op="propose", id=DS, prefix="three-", count=40, concurrency=2)

    # check: one group (node 3 is in the cluster's group), every value everywhere
    wait_until(lambda: proposed(n1, "one-") and proposed(n3, "three-"), 90, "the proposals")
    all_acked = set(acked(n1)) | set(acked(n3))
    assert len(all_acked) == 80
    for node in (n1, n3):
        wait_until(
            lambda node=node: all_acked <= set(delivered(node, DS)),
            60,
            f"node {node.node_id}'s subscriber holding every acknowledged value",
        )
    one, three = delivered(n1, DS), delivered(n3, DS)
    assert len(one) == len(set(one))
    assert len(three) == len(set(three))
    assert one[: len(three)] == three[: len(one)], "two orders: two groups"
    groups = [status(n).get(DS) for n in (n1, n2, n3)]
    hosting = [g for g in groups if g is not None]
    voter_sets = {tuple(sorted(g["voters"])) for g in hosting}  # type: ignore[call-overload]
    assert len(voter_sets) == 1, f"more than one configuration for one id: {hosting}"


def sub_errors(node: NodeProcess) -> list[str]:
    node.drain()
    return [str(e["error"]) for e in node.log if e.get("event") == "sub_error"]


def test_two_groups_under_one_id_are_reported_and_the_younger_refuses_writes(
    procs: ProcessCluster, tmp_path: Path
) -> None:
    # init: two separate clusters (each told to start one) create a group for one id
    (pa, ga), (pb, gb), (pc, gc) = (free_ports(2) for _ in range(3))
    extra = ["--proposal-timeout=3"]
    a = NodeProcess(1, tmp_path / "node1", pa, ga, [], extra)
    b = NodeProcess(2, tmp_path / "node2", pb, gb, [], extra)
    for node in (a, b):
        procs.nodes[node.node_id] = node
        node.start()
    for node in (a, b):
        node.send(op="subscribe", id=DS)
        node.wait_for("subscribed", 30)
        node.send(op="propose", id=DS, prefix=f"n{node.node_id}-", count=5, concurrency=1)
        wait_until(lambda node=node: proposed(node, f"n{node.node_id}-"), 30, "first values")

    # act: a third node contacts both, and gossip merges the two clusters
    c = NodeProcess(3, tmp_path / "node3", pc, gc, [f"127.0.0.1:{ga}", f"127.0.0.1:{gb}"], extra)
    procs.nodes[3] = c
    c.start()
    procs.wait_members(3, 60)

    # check: both subscribers are told, status names the other side, and exactly one
    # of the two groups (the younger) refuses new writes
    for node, other in ((a, b), (b, a)):
        wait_until(lambda node=node: sub_errors(node) != [], 60, "a line on errors()")
        assert sub_errors(node) == ["SplitGroupError"]
        wait_until(
            lambda node=node, other=other: other.node_id in status(node)[DS]["split_with"],
            30,
            f"node {node.node_id}'s status naming the other group",
        )
    refusing = [n.node_id for n in (a, b) if status(n)[DS]["refusing_writes"]]
    assert len(refusing) == 1
    younger = procs.nodes[refusing[0]]
    older = b if younger is a else a
    younger.send(op="propose", id=DS, prefix="late-y-", count=1, concurrency=1)
    older.send(op="propose", id=DS, prefix="late-o-", count=1, concurrency=1)
    wait_until(lambda: proposed(younger, "late-y-") and proposed(older, "late-o-"), 30, "late")
    failed = [e for e in younger.log if e.get("event") == "propose_failed"]
    assert [e["error"] for e in failed] == ["SplitGroupError"]
    assert "late-o-0" in acked(older)
