"""Subscriptions outlive their members, with real processes: a node paused longer than
the repair grace has its voter replaced and removed; when it wakes, it learns of the
removal from the group's leader, rejoins, and its subscription goes on. A transport
partition longer than the grace (gossip still up) removes nobody. Through both, every
acknowledged value reaches every subscriber once, in one order."""

from __future__ import annotations

import time

import pytest

from .cluster import (
    ProcessCluster,
    acked,
    check_streams,
    proposed,
    seen_by_leaders,
    voters_seen_by_leaders,
    wait_until,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

GRACE_S = 2.0
NODES = (1, 2, 3, 4, 5)


def members_seen_by_leaders(procs: list) -> dict[str, list[int]]:  # type: ignore[type-arg]
    voters = seen_by_leaders(procs, "voters")
    learners = seen_by_leaders(procs, "learners")
    return {ds: sorted(voters[ds] + learners.get(ds, [])) for ds in voters}


def test_a_subscription_outlives_its_removed_member_and_partitions(
    procs: ProcessCluster,
) -> None:
    # init: five nodes, a group of three voters, a subscriber on every node
    for node_id in NODES:
        procs.add(
            node_id,
            extra=[
                f"--rack=r{node_id}",
                f"--repair-grace={GRACE_S}",
                "--snapshot-every=100",
                "--snapshot-keep=20",
                "--proposal-timeout=90",
            ],
        )
    procs.wait_members(len(NODES))
    nodes = procs.nodes
    nodes[1].send(op="allocate", replicas=3)
    ds = str(nodes[1].wait_for("allocated")["id"])
    for node in nodes.values():
        node.send(op="subscribe", id=ds)
        node.wait_for("subscribed", 30)
    everyone = list(nodes.values())
    wait_until(lambda: ds in voters_seen_by_leaders(everyone), 20, "a leader")
    voters = voters_seen_by_leaders(everyone)[ds]
    leader = next(n.node_id for n in everyone if ds in seen_by_leaders([n]) and n.node_id in voters)
    victim = nodes[next(v for v in voters if v != leader)]
    for node in everyone:
        node.send(op="propose", id=ds, prefix=f"a{node.node_id}-", count=150, concurrency=2)

    # act 1: the victim (a voter) freezes for longer than the grace
    time.sleep(0.5)
    victim.pause()
    others = [n for n in everyone if n is not victim]
    try:
        wait_until(
            lambda: victim.node_id not in voters_seen_by_leaders(others).get(ds, [victim.node_id]),
            60,
            "the frozen voter replaced",
        )
        assert len(voters_seen_by_leaders(others)[ds]) == 3
    finally:
        victim.resume()

    # act 2: another node's transport is cut off for longer than the grace; its gossip
    # still answers, so it is not dead, and nothing is removed
    cut = nodes[next(n for n in NODES if n not in (leader, victim.node_id))]
    cut.send(op="cut", peers=[n for n in NODES if n != cut.node_id])
    cut.wait_for("cut")
    time.sleep(GRACE_S * 3)
    assert cut.node_id in members_seen_by_leaders([n for n in everyone if n is not cut]).get(
        ds, []
    ), "a live node was removed on gossip-free evidence"
    cut.send(op="heal")
    cut.wait_for("healed")
    for node in everyone:
        node.send(op="propose", id=ds, prefix=f"b{node.node_id}-", count=40, concurrency=2)

    # check: the victim rejoined (a learner now) and said so on errors()
    for node in everyone:
        for prefix in ("a", "b"):
            wait_until(
                lambda node=node, prefix=prefix: proposed(node, f"{prefix}{node.node_id}-"),
                180,
                f"node {node.node_id} finished proposing {prefix}",
            )
    wait_until(
        lambda: victim.node_id in members_seen_by_leaders(others).get(ds, []),
        60,
        "the removed node's member back in the group",
    )
    assert any(e.get("event") == "sub_error" for e in victim.log), "no line on errors()"

    # check: every acknowledged value on every subscriber, once, in one order
    all_acked = {v for node in everyone for v in acked(node)}
    assert len(all_acked) > 300
    check_streams(everyone, ds, all_acked, timeout_s=90)
