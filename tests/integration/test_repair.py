"""Replica repair with real processes: a node dies, every group it served gets its
replica count back after the grace period with nothing acknowledged lost, and when the
node returns its replaced replicas are removed (its subscriber's learner stays)."""

from __future__ import annotations

import pytest

from .cluster import (
    ProcessCluster,
    learners_seen_by_leaders,
    proposed,
    status,
    voters_seen_by_leaders,
    wait_until,
)

pytestmark = pytest.mark.chaos

GROUPS = 4
LABELS = {1: ("dc1", "r1"), 2: ("dc1", "r2"), 3: ("dc1", "r3"), 4: ("dc2", "r1"), 5: ("dc2", "r2")}


def test_failed_node_replicas_are_rebuilt_and_removed_when_it_returns(
    procs: ProcessCluster,
) -> None:
    # init: five nodes in two data centers; groups of three replicas; one subscriber
    for node_id, (dc, rack) in LABELS.items():
        procs.add(
            node_id,
            extra=[f"--data-center={dc}", f"--rack={rack}", "--repair-grace=2"],
        )
    procs.wait_members(5)
    n1 = procs.nodes[1]
    ids = []
    for _ in range(GROUPS):
        n1.send(op="allocate", replicas=3)
        ids.append(str(n1.wait_for("allocated")["id"]))
    n1.send(op="subscribe", id=ids[0])
    n1.wait_for("subscribed")
    n1.send(op="propose", id=ids[0], prefix="before-", count=30, concurrency=4)
    n1.wait_for("proposed", 30)
    live = list(procs.nodes.values())
    wait_until(lambda: len(voters_seen_by_leaders(live)) == GROUPS, 20, "a leader per group")
    placed = voters_seen_by_leaders(live)

    # act: the node (other than node 1) holding the most replicas, though not of every
    # group, subscribes to a group it does not hold (joining it as a learner); kill -9 it
    counts = {n: sum(n in v for v in placed.values()) for n in (2, 3, 4, 5)}
    victim_id = max((n for n in counts if counts[n] < GROUPS), key=lambda n: (counts[n], -n))
    victim = procs.nodes[victim_id]
    learner_of = next(gid for gid, voters in placed.items() if victim_id not in voters)
    victim.send(op="subscribe", id=learner_of)
    victim.wait_for("subscribed", 30)
    wait_until(
        lambda: victim_id in learners_seen_by_leaders(live).get(learner_of, []),
        20,
        "the victim's learner in its group",
    )
    victim.kill()
    live = [n for n in procs.nodes.values() if n.node_id != victim_id]
    affected = [gid for gid, voters in placed.items() if victim_id in voters]
    assert affected, "the victim held no replica"
    n1.send(op="propose", id=ids[0], prefix="during-", count=30, concurrency=4)

    # check: every group is back at three voters, none of them the dead node
    def repaired() -> bool:
        now = voters_seen_by_leaders(live)
        return len(now) == GROUPS and all(len(v) == 3 and victim_id not in v for v in now.values())

    wait_until(repaired, 60, "every group back at 3 replicas without the dead node")
    # a subscriber's learner is never removed for being unreachable (only its close()
    # or leave() removes it): it is still there when its node returns
    assert victim_id in learners_seen_by_leaders(live).get(learner_of, [])
    wait_until(lambda: proposed(n1, "during-"), 60, "the proposals made during the repair")
    n1.send(op="propose", id=ids[0], prefix="after-", count=10, concurrency=2)
    wait_until(lambda: proposed(n1, "after-"), 60, "the proposals made after the repair")
    acked = {str(e["data"]) for e in n1.log if e.get("event") == "acked"}
    committed = [str(e["data"]) for e in n1.log if e.get("event") == "commit"]
    assert len(acked) == 70
    assert acked <= set(committed), "an acknowledged proposal was lost"
    assert len(committed) == len(set(committed))

    # act: the dead node comes back with its old data
    victim.log = []
    victim.start()

    # check: its replaced voters learn from the leader's proof that they were removed,
    # and are deleted; its learner, still a member, stays and catches up
    wait_until(
        lambda: set(status(victim)) == {learner_of},
        60,
        "the returning node dropped its replaced replicas and kept its learner",
    )
    assert repaired()
    assert victim_id in learners_seen_by_leaders(live).get(learner_of, [])
