"""Property tests (hypothesis) of `copycat.placement`: determinism, the spreading rules
against a brute-force oracle of feasibility, and minimal movement on leave and join."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from copycat.errors import NotEnoughNodesError
from copycat.placement import (
    NodeInfo,
    PlacementRule,
    RackSpread,
    Topology,
    place,
    place_groups,
    violations,
)
from tests.placement.helpers import grid, group_ids, rules, topologies


@settings(max_examples=150, deadline=None)
@given(
    topology=topologies(),
    rule=rules(),
    group=group_ids,
    data=st.data(),
)
def test_same_view_same_placement_in_any_order(topology, rule, group, data):
    """Every node computes the same placement from the same view: the order in which
    nodes, exclusions and current replicas are listed does not matter."""
    ids = list(topology.node_ids)
    exclude = data.draw(st.lists(st.sampled_from(ids), max_size=2)) if ids else []
    current = data.draw(st.lists(st.sampled_from(ids), max_size=3, unique=True)) if ids else []
    shuffled = data.draw(st.permutations(list(topology)))

    def run(t: Topology, ex: list[int], cur: list[int]) -> object:
        try:
            return place(group, t, rule, exclude=ex, current=cur)
        except NotEnoughNodesError as e:
            return ("error", e.asked, e.available, str(e))

    first = run(topology, exclude, current)
    assert run(Topology.of(shuffled), exclude[::-1], current[::-1]) == first
    assert run(topology, exclude, current) == first


def _brute_force_feasible(topology: Topology, rule: PlacementRule, exclude: list[int]) -> bool:
    eligible = [n.node_id for n in topology if n.weight > 0 and n.node_id not in exclude]
    return any(
        not violations(combo, topology, rule, exclude=exclude)
        for combo in itertools.combinations(eligible, rule.replicas)
    )


@settings(max_examples=200, deadline=None)
@given(
    topology=topologies(max_per_rack=2),
    rule=rules(max_replicas=4),
    group=group_ids,
    data=st.data(),
)
def test_placement_keeps_the_rules_or_none_could(topology, rule, group, data):
    """The result keeps every rule (distinct nodes; data center counts; distinct racks
    when there are enough). `NotEnoughNodesError` is raised exactly when no replica set
    could keep them (checked by brute force), with the right fields."""
    ids = list(topology.node_ids)
    exclude = data.draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)) if ids else []
    eligible = sum(1 for n in topology if n.weight > 0 and n.node_id not in exclude)
    if not _brute_force_feasible(topology, rule, exclude):
        with pytest.raises(NotEnoughNodesError) as info:
            place(group, topology, rule, exclude=exclude)
        assert info.value.asked == rule.replicas
        assert info.value.available == eligible
        return
    got = place(group, topology, rule, exclude=exclude)
    assert violations(got, topology, rule, exclude=exclude) == []
    assert len(got) == len(set(got)) == rule.replicas


@settings(max_examples=100, deadline=None)
@given(
    topology=topologies(max_per_rack=2),
    rule=rules(max_replicas=4),
    group=group_ids,
    data=st.data(),
)
def test_valid_current_replicas_stay(topology, rule, group, data):
    """A current replica set that keeps the rules is the target as it is."""
    try:
        other = place(group + "-other", topology, rule)
    except NotEnoughNodesError:
        return
    current = data.draw(st.permutations(other))
    assert set(place(group, topology, rule, current=current)) == set(other)


@st.composite
def stable_change(draw: st.DrawFn) -> tuple[Topology, PlacementRule, NodeInfo]:
    """A topology whose racks all have more nodes than replicas, a rule, and a node to
    add to or remove from an existing rack: such a change leaves every rack and data
    center able to hold the same shares, which is when movement is exactly minimal."""
    rule = draw(rules(max_replicas=3))
    topology = draw(
        topologies(
            max_dcs=3,
            max_racks=3,
            min_per_rack=rule.replicas + 1,
            max_per_rack=rule.replicas + 2,
            weights=False,
        )
    )
    node = draw(st.sampled_from(list(topology)))
    return topology, rule, node


@settings(max_examples=60, deadline=None)
@given(change=stable_change(), groups=st.lists(group_ids, min_size=1, max_size=20))
def test_leave_moves_only_groups_on_the_node(change, groups):
    """When a node leaves, only groups that had a replica on it change placement."""
    topology, rule, leaver = change
    try:
        before = {g: place(g, topology, rule) for g in groups}
    except NotEnoughNodesError:
        assume(False)
    after = {g: place(g, topology.without(leaver.node_id), rule) for g in groups}
    for g in groups:
        if leaver.node_id not in before[g]:
            assert after[g] == before[g]
        else:
            assert leaver.node_id not in after[g]


@settings(max_examples=60, deadline=None)
@given(change=stable_change(), groups=st.lists(group_ids, min_size=1, max_size=20))
def test_join_moves_only_groups_the_new_node_wins(change, groups):
    """When a node joins (here: into the rack of `node`), only groups in which the new
    node now holds a replica change placement."""
    topology, rule, peer = change
    newcomer = NodeInfo(node_id=10_001, data_center=peer.data_center, rack=peer.rack)
    try:
        before = {g: place(g, topology, rule) for g in groups}
    except NotEnoughNodesError:
        assume(False)
    after = {g: place(g, topology.with_nodes(newcomer), rule) for g in groups}
    for g in groups:
        if newcomer.node_id not in after[g]:
            assert after[g] == before[g]


@settings(max_examples=12, deadline=None)
@given(
    leaver=st.integers(1, 18),
    replicas=st.integers(1, 3),
    spread=st.sampled_from(list(RackSpread)),
    load_factor=st.sampled_from([None, 1.15, 1.3]),
)
def test_one_of_n_leaving_moves_about_one_nth(leaver, replicas, spread, load_factor):
    """One node of N leaves: the replicas that move are about 1/N of all of them, and at
    most 2/N, with and without the load bound."""
    topology = grid(3, 2, 3)  # N = 18
    rule = PlacementRule(replicas=replicas, rack_spread=spread)
    groups = [f"grp-{i}" for i in range(300)]
    before = place_groups(groups, topology, rule, load_factor=load_factor)
    after = place_groups(groups, topology.without(leaver), rule, load_factor=load_factor)
    moved = sum(len(set(after[g]) - set(before[g])) for g in groups)
    placed = len(groups) * replicas
    held = sum(leaver in nodes for nodes in before.values())
    assert moved >= held  # every replica on the leaver moves
    # Plain rendezvous moves exactly the leaver's replicas (about 1/N). The load bound
    # adds collateral moves when a full node's overflow cascades, which grows as the
    # per-node load shrinks (here ~17 replicas a node with one replica per group): the
    # margin is wider for it. placementsim checks 2/N at the scale.
    limit = 2 / len(topology) if load_factor is None else 2.5 / len(topology)
    assert moved / placed <= limit


@settings(max_examples=12, deadline=None)
@given(
    dc=st.integers(1, 3),
    rack=st.integers(1, 2),
    replicas=st.integers(1, 3),
    load_factor=st.sampled_from([None, 1.15]),
)
def test_one_node_joining_moves_about_one_nth(dc, rack, replicas, load_factor):
    topology = grid(3, 2, 3)
    newcomer = NodeInfo(node_id=100, data_center=f"dc{dc}", rack=f"r{rack}")
    rule = PlacementRule(replicas=replicas)
    groups = [f"grp-{i}" for i in range(300)]
    before = place_groups(groups, topology, rule, load_factor=load_factor)
    after = place_groups(groups, topology.with_nodes(newcomer), rule, load_factor=load_factor)
    moved = sum(len(set(after[g]) - set(before[g])) for g in groups)
    assert moved / (len(groups) * replicas) <= 2 / len(topology)
