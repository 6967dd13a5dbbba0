"""Graceful leave with real processes: a node that leaves hands each of its replicas
over (leadership included) before it goes, so every group keeps three voters without
waiting for repair, and nothing acknowledged is lost."""

from __future__ import annotations

import pytest

from .cluster import ProcessCluster, proposed, voters_seen_by_leaders, wait_until

pytestmark = pytest.mark.chaos

LABELS = {1: ("dc1", "r1"), 2: ("dc1", "r2"), 3: ("dc1", "r3"), 4: ("dc2", "r1"), 5: ("dc2", "r2")}
GRACE_S = 600  # far beyond this test's bounds: only the hand-over can explain the result


def test_a_leaving_node_hands_its_replicas_over(procs: ProcessCluster) -> None:
    # init: five nodes in two data centers; groups of three replicas, until some node
    # other than node 1 (the proposer) leads one
    for node_id, (dc, rack) in LABELS.items():
        procs.add(
            node_id,
            extra=[f"--data-center={dc}", f"--rack={rack}", f"--repair-grace={GRACE_S}"],
        )
    procs.wait_members(5)
    n1 = procs.nodes[1]
    nodes = list(procs.nodes.values())
    ids: list[str] = []
    leaders: dict[str, int] = {}
    for _ in range(10):
        n1.send(op="allocate", replicas=3)
        ids.append(str(n1.wait_for("allocated")["id"]))
        wait_until(lambda: len(voters_seen_by_leaders(nodes)) == len(ids), 20, "leaders")
        leaders = _leaders(procs)
        if len(ids) >= 4 and any(leader != 1 for leader in leaders.values()):
            break
    placed = voters_seen_by_leaders(nodes)
    assert all(len(v) == 3 for v in placed.values())
    candidates = {leader for leader in leaders.values() if leader != 1}
    assert candidates, "node 1 leads every group"
    leaver_id = max(candidates, key=lambda n: (sum(n in v for v in placed.values()), -n))
    leaver = procs.nodes[leaver_id]
    held = [ds for ds, voters in placed.items() if leaver_id in voters]
    for ds in ids:
        n1.send(op="subscribe", id=ds)
        n1.wait_for("subscribed")
        n1.send(op="propose", id=ds, prefix=f"before-{ds}-", count=10, concurrency=2)
    for ds in ids:
        wait_until(lambda ds=ds: proposed(n1, f"before-{ds}-"), 30, "proposals before")

    # act: proposals flow while the node that holds the most replicas leaves
    for ds in held:
        n1.send(op="propose", id=ds, prefix=f"during-{ds}-", count=30, concurrency=2)
    leaver.send(op="leave", timeout=90)
    leaver.wait_for("left", 100)
    left = [n for n in nodes if n.node_id != leaver_id]

    # check: every group has three voters, none of them the leaver, well before the
    # repair grace could have run out
    def handed_over() -> bool:
        now = voters_seen_by_leaders(left)
        return set(now) == set(ids) and all(
            len(v) == 3 and leaver_id not in v for v in now.values()
        )

    wait_until(handed_over, 30, "every group at 3 voters without the leaver")
    for ds in held:
        wait_until(lambda ds=ds: proposed(n1, f"during-{ds}-"), 60, "proposals during")
    for ds in ids:
        n1.send(op="propose", id=ds, prefix=f"after-{ds}-", count=10, concurrency=2)
    for ds in ids:
        wait_until(lambda ds=ds: proposed(n1, f"after-{ds}-"), 60, "proposals after")
    acked = {str(e["data"]) for e in n1.log if e.get("event") == "acked"}
    failed = [e for e in n1.log if e.get("event") == "propose_failed"]
    committed = [str(e["data"]) for e in n1.log if e.get("event") == "commit"]
    assert not failed
    assert len(acked) == 20 * len(ids) + 30 * len(held)
    assert acked <= set(committed), "an acknowledged proposal was lost"
    assert len(committed) == len(set(committed))
    assert handed_over()


def _leaders(procs: ProcessCluster) -> dict[str, int]:
    from .cluster import status

    out: dict[str, int] = {}
    for node in procs.nodes.values():
        for ds, g in status(node).items():
            if g["role"] == "LEADER":
                out[ds] = node.node_id
    return out
