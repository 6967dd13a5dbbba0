"""Top-up with real processes: groups created on a one-node cluster (one replica, three
asked) get their three voters once two more nodes join, and keep every acknowledged
proposal."""

from __future__ import annotations

import pytest

from copycat._ids import DataStructureId

from .cluster import ProcessCluster, proposed, status, voters_seen_by_leaders, wait_until

pytestmark = pytest.mark.chaos


def test_groups_of_a_small_cluster_are_topped_up_as_nodes_join(procs: ProcessCluster) -> None:
    # init: one node alone; an allocated group and a group a subscriber started
    n1 = procs.add(1)
    n1.send(op="allocate", replicas=3)  # an explicit count the cluster cannot give
    refused = n1.next_event(20)
    assert refused is not None
    assert (refused["event"], refused["error"]) == ("error", "NotEnoughNodesError")
    n1.send(op="allocate")
    allocated = str(n1.wait_for("allocated")["id"])
    started = str(DataStructureId.new())
    ids = [allocated, started]
    for ds in ids:
        n1.send(op="subscribe", id=ds)
        n1.wait_for("subscribed")
    for ds in ids:
        n1.send(op="propose", id=ds, prefix=f"before-{ds}-", count=20, concurrency=4)
    for ds in ids:
        wait_until(lambda ds=ds: proposed(n1, f"before-{ds}-"), 30, "proposals on one node")
    assert voters_seen_by_leaders([n1]) == {ds: [1] for ds in ids}

    # act: two more nodes join
    procs.add(2)
    procs.add(3)
    procs.wait_members(3)

    # check: every group reaches three voters, and the newcomers hold the data
    nodes = list(procs.nodes.values())

    def topped_up() -> bool:
        now = voters_seen_by_leaders(nodes)
        return set(now) == set(ids) and all(sorted(v) == [1, 2, 3] for v in now.values())

    wait_until(topped_up, 60, "every group at 3 voters")
    applied = {ds: int(g["applied"]) for ds, g in status(n1).items()}  # type: ignore[call-overload]

    def caught_up() -> bool:
        for node in nodes[1:]:
            groups = status(node)
            for ds in ids:
                if ds not in groups or int(groups[ds]["applied"]) < applied[ds]:  # type: ignore[call-overload]
                    return False
        return True

    wait_until(caught_up, 30, "the new voters hold every committed entry")

    for ds in ids:
        n1.send(op="propose", id=ds, prefix=f"after-{ds}-", count=20, concurrency=4)
    for ds in ids:
        wait_until(lambda ds=ds: proposed(n1, f"after-{ds}-"), 60, "proposals after top-up")
    acked = {str(e["data"]) for e in n1.log if e.get("event") == "acked"}
    committed = [str(e["data"]) for e in n1.log if e.get("event") == "commit"]
    assert len(acked) == 80
    assert acked <= set(committed), "an acknowledged proposal was lost"
    assert len(committed) == len(set(committed))
    assert topped_up()
