"""`diff_replicas`: what the repair loop must add and remove, and in which order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copycat.placement import ChangeAction, ReplicaChange, diff_replicas, place
from tests.placement.helpers import grid

ADD, REMOVE = ChangeAction.ADD, ChangeAction.REMOVE


@pytest.mark.parametrize(
    ("current", "target", "keep", "add", "remove"),
    [
        ([1, 2, 3], [1, 2, 3], (1, 2, 3), (), ()),
        ([3, 1, 2], [2, 3, 1], (2, 3, 1), (), ()),
        ([1, 2, 3], [1, 2, 4], (1, 2), (4,), (3,)),
        ([1, 2], [1, 2, 5], (1, 2), (5,), ()),
        ([1, 2, 3, 4], [2, 4], (2, 4), (), (1, 3)),
        ([], [7, 8, 9], (), (7, 8, 9), ()),
        ([1, 2, 3], [4, 5, 6], (), (4, 5, 6), (1, 2, 3)),
    ],
)
def test_diff_table(current, target, keep, add, remove):
    diff = diff_replicas(current, target)
    assert (diff.keep, diff.add, diff.remove) == (keep, add, remove)
    assert diff.unchanged == (not add and not remove)


def test_dead_nodes_are_removed_first():
    topology = grid(1, 1, 6).without(5)
    diff = diff_replicas([2, 5, 6], [1, 3, 4], topology=topology)
    assert diff.remove == (5, 2, 6)
    assert diff.steps() == (
        ReplicaChange(action=ADD, node_id=1),
        ReplicaChange(action=REMOVE, node_id=5),
        ReplicaChange(action=ADD, node_id=3),
        ReplicaChange(action=REMOVE, node_id=2),
        ReplicaChange(action=ADD, node_id=4),
        ReplicaChange(action=REMOVE, node_id=6),
    )


def test_repair_after_a_death_is_one_add_and_one_remove():
    topology = grid(3, 3, 4)
    for g in [f"ds-{i}" for i in range(50)]:
        old = place(g, topology)
        dead = old[1]
        alive = topology.without(dead)
        diff = diff_replicas(old, place(g, alive, current=old), topology=alive)
        assert diff.remove == (dead,)
        assert len(diff.add) == 1
        assert [s.action for s in diff.steps()] == [ADD, REMOVE]


@given(
    current=st.lists(st.integers(1, 12), unique=True, max_size=6),
    target=st.lists(st.integers(1, 12), unique=True, max_size=6),
)
def test_steps_turn_current_into_target_without_shrinking_below_both(current, target):
    diff = diff_replicas(current, target)
    members = set(current)
    floor = min(len(current), len(target))
    for step in diff.steps():
        if step.action is ADD:
            assert step.node_id not in members
            members.add(step.node_id)
        else:
            assert step.node_id in members
            members.remove(step.node_id)
        assert len(members) >= floor
    assert members == set(target)
