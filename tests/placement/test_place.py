"""Table tests of `copycat.placement`: the spreading rules, errors, exclusion, current
replicas, weights, the load bound, and oracles for the hierarchy (naive scoring)."""

from __future__ import annotations

from collections import Counter

import pytest

from copycat.errors import ConfigError, NotEnoughNodesError
from copycat.placement import (
    NodeInfo,
    PlacementRule,
    RackSpread,
    Topology,
    node_hash,
    place,
    place_groups,
    score,
    violations,
)
from tests.placement.helpers import grid, naive_order

IDS = [f"01HZX{i:021d}" for i in range(300)]


def dcs_of(topology: Topology, nodes: tuple[int, ...]) -> Counter[str]:
    return Counter(topology.node(n).data_center for n in nodes)  # type: ignore[union-attr]


def racks_of(topology: Topology, nodes: tuple[int, ...]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for n in nodes:
        info = topology.node(n)
        assert info is not None
        out[(info.data_center, info.rack)] += 1
    return out


# -- the hash is part of the contract ---------------------------------------------------


def test_node_hash_is_pinned():
    """Changing the hash moves every replica of every cluster: pin it (and one placement
    on the simulator's cluster) so a change cannot slip in unnoticed."""
    assert node_hash("01ARZ3NDEKTSV4RRFFQ69G5FAV", 1) == 0x269027F3FA446E95
    assert node_hash("01ARZ3NDEKTSV4RRFFQ69G5FAV", 2) == 0x7B294D3F4F536966
    assert node_hash("\u00e9", 12345) == 0xF100B44380C07307
    assert place("01ARZ3NDEKTSV4RRFFQ69G5FAV", grid(3, 3, 4)) == (24, 28, 12)


def test_score_orders_like_the_hash_for_equal_weights():
    hashes = sorted(node_hash(g, 7) for g in IDS[:50])
    scores = [score(h, 1.0) for h in hashes]
    assert scores == sorted(scores)
    assert all(s > 0 for s in scores)
    assert score(0, 1.0) > 0
    assert score(2**64 - 1, 1.0) < float("inf")


# -- spreading rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "rule", "dc_counts"),
    [
        # one replica per data center when there are enough of them
        ((3, 3, 4), PlacementRule(replicas=3), [1, 1, 1]),
        ((5, 2, 2), PlacementRule(replicas=3), [1, 1, 1]),
        # fewer data centers than replicas: as even as possible
        ((2, 3, 4), PlacementRule(replicas=3), [1, 2]),
        ((2, 3, 4), PlacementRule(replicas=5), [2, 3]),
        ((1, 3, 4), PlacementRule(replicas=3), [3]),
        # data_center_replicas fixes the number of data centers
        ((3, 3, 4), PlacementRule(replicas=3, data_center_replicas=1), [3]),
        ((3, 3, 4), PlacementRule(replicas=3, data_center_replicas=2), [1, 2]),
        ((3, 3, 4), PlacementRule(replicas=5, data_center_replicas=3), [1, 2, 2]),
        ((4, 3, 4), PlacementRule(replicas=7, data_center_replicas=3), [2, 2, 3]),
        ((3, 3, 4), PlacementRule(replicas=6, data_center_replicas=2), [3, 3]),
    ],
)
def test_data_center_counts(shape, rule, dc_counts):
    topology = grid(*shape)
    for g in IDS[:60]:
        nodes = place(g, topology, rule)
        assert len(nodes) == rule.replicas == len(set(nodes))
        assert sorted(dcs_of(topology, nodes).values()) == dc_counts
        assert violations(nodes, topology, rule) == []


@pytest.mark.parametrize("spread", list(RackSpread))
def test_distinct_racks_when_racks_suffice(spread):
    topology = grid(1, 5, 3)
    rule = PlacementRule(replicas=5, rack_spread=spread)
    for g in IDS[:60]:
        assert max(racks_of(topology, place(g, topology, rule)).values()) == 1


def test_preferred_spreads_evenly_over_too_few_racks():
    """5 replicas over 2 racks of 4: 3 + 2, never 4 + 1."""
    topology = grid(1, 2, 4)
    rule = PlacementRule(replicas=5)
    for g in IDS[:60]:
        assert sorted(racks_of(topology, place(g, topology, rule)).values()) == [2, 3]


def test_preferred_fills_small_racks_first_when_uneven():
    """Racks of 1 and 5 nodes, 4 replicas: the lone node must take one (cap 3)."""
    nodes = [NodeInfo(node_id=1, data_center="a", rack="small")] + [
        NodeInfo(node_id=i, data_center="a", rack="big") for i in range(2, 7)
    ]
    topology = Topology.of(nodes)
    rule = PlacementRule(replicas=4)
    for g in IDS[:30]:
        got = place(g, topology, rule)
        assert 1 in got
        assert violations(got, topology, rule) == []


def test_required_refuses_too_few_racks():
    topology = grid(1, 2, 4)
    rule = PlacementRule(replicas=3, rack_spread=RackSpread.REQUIRED)
    with pytest.raises(NotEnoughNodesError) as info:
        place(IDS[0], topology, rule)
    assert info.value.asked == 3
    assert info.value.available == 8
    assert "rack" in str(info.value)


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topology", "rule", "exclude", "available", "words"),
    [
        (grid(1, 1, 2), PlacementRule(replicas=3), (), 2, "too few eligible nodes"),
        (grid(1, 3, 1), PlacementRule(replicas=3), (1,), 2, "too few eligible nodes"),
        (Topology.of([]), PlacementRule(replicas=1), (), 0, "too few eligible nodes"),
        (
            grid(2, 3, 4),
            PlacementRule(replicas=3, data_center_replicas=3),
            (),
            24,
            "3 data centers",
        ),
        (
            grid(3, 1, 1),
            PlacementRule(replicas=6, data_center_replicas=3),
            (),
            3,
            "too few eligible nodes",
        ),
        (grid(3, 1, 2), PlacementRule(replicas=6, data_center_replicas=2), (), 6, "2 data centers"),
        (
            grid(3, 2, 2),
            PlacementRule(replicas=4, rack_spread=RackSpread.REQUIRED, data_center_replicas=1),
            (),
            12,
            "1 data centers holding 4",
        ),
    ],
)
def test_not_enough_nodes(topology, rule, exclude, available, words):
    with pytest.raises(NotEnoughNodesError) as info:
        place(IDS[0], topology, rule, exclude=exclude)
    assert info.value.asked == rule.replicas
    assert info.value.available == available
    assert words in str(info.value)
    with pytest.raises(NotEnoughNodesError):
        place_groups(IDS[:3], topology, rule, exclude=exclude)


def test_weight_zero_nodes_are_draining():
    nodes = [NodeInfo(node_id=i, data_center="a", rack=f"r{i}", weight=0.0) for i in (1, 2)]
    nodes += [NodeInfo(node_id=i, data_center="a", rack=f"r{i}") for i in (3, 4, 5)]
    topology = Topology.of(nodes)
    for g in IDS[:50]:
        assert set(place(g, topology)) == {3, 4, 5}
    with pytest.raises(NotEnoughNodesError) as info:
        place(IDS[0], topology, PlacementRule(replicas=4))
    assert info.value.available == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"replicas": 0}, "replicas"),
        ({"replicas": True}, "replicas"),
        ({"replicas": 3, "data_center_replicas": 4}, "data_center_replicas"),
        ({"replicas": 3, "data_center_replicas": 0}, "data_center_replicas"),
        ({"rack_spread": "preferred"}, "rack_spread"),
    ],
)
def test_rule_validation(kwargs, field):
    with pytest.raises(ConfigError) as info:
        PlacementRule(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    "kwargs",
    [
        {"node_id": 0},
        {"node_id": -1},
        {"weight": -1.0},
        {"weight": float("nan")},
        {"weight": float("inf")},
    ],
)
def test_node_validation(kwargs):
    fields = {"node_id": 1, "data_center": "a", "rack": "r", **kwargs}
    with pytest.raises(ValueError, match=r"node_id|weight"):
        NodeInfo(**fields)


def test_topology_refuses_duplicate_ids():
    with pytest.raises(ValueError, match="twice"):
        Topology.of([NodeInfo(node_id=1, data_center="a", rack="r")] * 2)


def test_group_ids_must_be_str():
    with pytest.raises(TypeError):
        place(b"abc", grid(1, 1, 3))  # type: ignore[arg-type]


def test_load_factor_validation():
    with pytest.raises(ConfigError):
        place_groups(IDS[:2], grid(1, 1, 3), load_factor=0.9)


# -- exclusion and current replicas -----------------------------------------------------


def test_exclude_is_the_same_as_leaving():
    topology = grid(3, 3, 2)
    for g in IDS[:40]:
        dead = place(g, topology)[0]
        assert place(g, topology, exclude=[dead]) == place(g, topology.without(dead))
        assert dead not in place(g, topology, exclude=[dead])


def test_repair_keeps_the_survivors():
    """The dead node's replica moves; the others stay, with or without `current`."""
    topology = grid(3, 3, 4)
    for g in IDS[:100]:
        old = place(g, topology)
        for dead in old:
            new = place(g, topology, exclude=[dead], current=old)
            assert set(old) - {dead} <= set(new)
            assert dead not in new
            assert violations(new, topology, exclude=[dead]) == []


def test_current_replicas_are_kept_when_valid():
    """A valid placement that rendezvous would not choose is kept as it is."""
    topology = grid(3, 3, 4)
    for g in IDS[:50]:
        ideal = place(g, topology)
        current = place(g, topology, exclude=ideal)  # valid, and disjoint from the ideal
        assert violations(current, topology) == []
        assert set(place(g, topology, current=current)) == set(current)


def test_invalid_current_replicas_are_corrected():
    """Two current replicas in one rack: one of them moves."""
    topology = grid(1, 3, 4)
    current = [1, 2, 5]  # 1 and 2 share rack r1
    got = place(IDS[0], topology, current=current)
    assert violations(got, topology) == []
    assert len(set(got) & set(current)) == 2


def test_groups_created_small_are_topped_up():
    """Two replicas placed when the cluster was small: the target keeps both."""
    big = grid(3, 2, 2)
    small = Topology.of([big.node(1), big.node(5)])  # type: ignore[list-item]
    for g in IDS[:30]:
        old = place(g, small, PlacementRule(replicas=2))
        new = place(g, big, PlacementRule(replicas=3), current=old)
        assert set(old) < set(new)


# -- weights ----------------------------------------------------------------------------


def test_weights_skew_load_in_proportion():
    weights = {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
    topology = Topology.of(
        NodeInfo(node_id=i, data_center="a", rack="r", weight=w) for i, w in weights.items()
    )
    groups = [f"g{i}" for i in range(4000)]
    counts = Counter(place(g, topology, PlacementRule(replicas=1))[0] for g in groups)
    for node_id, w in weights.items():
        expected = len(groups) * w / 10
        sd = (len(groups) * (w / 10) * (1 - w / 10)) ** 0.5
        assert abs(counts[node_id] - expected) < 5 * sd, (node_id, counts)


def test_weights_are_respected_by_the_load_bound():
    weights = {1: 1.0, 2: 1.0, 3: 2.0, 4: 4.0}
    topology = Topology.of(
        NodeInfo(node_id=i, data_center="a", rack="r", weight=w) for i, w in weights.items()
    )
    groups = [f"g{i}" for i in range(2000)]
    counts = Counter(
        n[0] for n in place_groups(groups, topology, PlacementRule(replicas=1)).values()
    )
    for node_id, w in weights.items():
        assert counts[node_id] <= 1.15 * len(groups) * w / 8 + 1


# -- the load bound ---------------------------------------------------------------------


def test_load_bound_caps_the_busiest_node():
    topology = grid(3, 3, 4)
    groups = [f"group-{i}" for i in range(1000)]
    bounded = place_groups(groups, topology)
    loads = Counter(n for nodes in bounded.values() for n in nodes)
    mean = 3000 / 36
    assert max(loads.values()) <= 1.15 * mean + 1
    for g, nodes in bounded.items():
        assert violations(nodes, topology) == [], g
    plain = place_groups(groups, topology, load_factor=None)
    assert plain == {g: place(g, topology) for g in groups}
    # The bound moves few groups away from plain rendezvous.
    assert sum(plain[g] != bounded[g] for g in groups) < 100


def test_place_groups_ignores_id_order_and_duplicates():
    topology = grid(2, 2, 3)
    ids = IDS[:80]
    assert place_groups(ids, topology) == place_groups(list(reversed(ids)) + ids[:5], topology)


# -- oracles ----------------------------------------------------------------------------


def test_unconstrained_matches_naive_scoring():
    """One data center, one rack: placement is the top `replicas` nodes by score."""
    nodes = [
        NodeInfo(node_id=i, data_center="a", rack="r", weight=[1.0, 2.0, 0.5][i % 3])
        for i in range(1, 13)
    ]
    topology = Topology.of(nodes)
    for replicas in (1, 3, 5):
        for g in IDS[:60]:
            expect = tuple(n.node_id for n in naive_order(g, nodes)[:replicas])
            assert place(g, topology, PlacementRule(replicas=replicas)) == expect


def test_one_per_data_center_matches_the_hierarchy():
    """Each data center's score is its best node's; the best `replicas` data centers
    each give their best node."""
    topology = grid(5, 2, 3)
    for g in IDS[:60]:
        best: dict[str, int] = {}
        for n in naive_order(g, list(topology)):
            best.setdefault(n.data_center, n.node_id)
        assert place(g, topology) == tuple(list(best.values())[:3])


def test_racks_match_the_hierarchy():
    """One data center, racks >= replicas: the best node of each of the best racks."""
    topology = grid(1, 4, 3)
    for g in IDS[:60]:
        best: dict[str, int] = {}
        for n in naive_order(g, list(topology)):
            best.setdefault(n.rack, n.node_id)
        assert place(g, topology) == tuple(list(best.values())[:3])
