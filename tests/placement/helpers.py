# Shared builders and hypothesis strategies for the placement tests.
#
# What lives here: topology builders, a deliberately naive scorer (the oracle), and
# strategies. What must not: assertions about placement (they live in the test modules).
"""Helpers for tests/placement."""

from __future__ import annotations

import hashlib
import math

from hypothesis import strategies as st

from copycat.placement import NodeInfo, PlacementRule, RackSpread, Topology


def grid(data_centers: int, racks: int, per_rack: int, *, first_id: int = 1) -> Topology:
    """dc1..dcD x r1..rR x K nodes, ids from `first_id`, weight 1."""
    nodes = []
    node_id = first_id
    for d in range(1, data_centers + 1):
        for r in range(1, racks + 1):
            for _ in range(per_rack):
                nodes.append(NodeInfo(node_id=node_id, data_center=f"dc{d}", rack=f"r{r}"))
                node_id += 1
    return Topology.of(nodes)


def naive_score(group_id: str, node: NodeInfo) -> float:
    """The documented score, written out from docs/placement.md without the library:
    BLAKE2b-64 (person "copycat-place/1") of the length-prefixed (group, "node", id)
    triple, u = (top 52 bits + 0.5) / 2**52, score = weight / -ln(u)."""
    key = b""
    for part in (group_id.encode(), b"node", str(node.node_id).encode()):
        key += len(part).to_bytes(4, "big") + part
    h = int.from_bytes(
        hashlib.blake2b(key, digest_size=8, person=b"copycat-place/1").digest(), "big"
    )
    u = ((h >> 12) + 0.5) / 2**52
    return node.weight / -math.log(u)


def naive_order(group_id: str, nodes: list[NodeInfo]) -> list[NodeInfo]:
    """Score every node of positive weight and sort, best first."""
    return sorted(
        (n for n in nodes if n.weight > 0),
        key=lambda n: (-naive_score(group_id, n), n.node_id),
    )


group_ids = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30)


@st.composite
def topologies(
    draw: st.DrawFn,
    *,
    max_dcs: int = 3,
    max_racks: int = 3,
    min_per_rack: int = 1,
    max_per_rack: int = 3,
    weights: bool = True,
) -> Topology:
    shape = [
        draw(st.lists(st.integers(min_per_rack, max_per_rack), min_size=1, max_size=max_racks))
        for _ in range(draw(st.integers(1, max_dcs)))
    ]
    count = sum(sum(racks) for racks in shape)
    ids = iter(draw(st.lists(st.integers(1, 10_000), min_size=count, max_size=count, unique=True)))
    nodes = []
    for d, racks in enumerate(shape):
        for r, size in enumerate(racks):
            for _ in range(size):
                weight = draw(st.sampled_from([1.0, 1.0, 2.0, 0.5, 0.0])) if weights else 1.0
                nodes.append(
                    NodeInfo(node_id=next(ids), data_center=f"dc{d}", rack=f"r{r}", weight=weight)
                )
    return Topology.of(nodes)


@st.composite
def rules(draw: st.DrawFn, *, max_replicas: int = 5) -> PlacementRule:
    replicas = draw(st.integers(1, max_replicas))
    d = draw(st.one_of(st.none(), st.integers(1, replicas)))
    spread = draw(st.sampled_from(list(RackSpread)))
    return PlacementRule(replicas=replicas, data_center_replicas=d, rack_spread=spread)
