# The inputs of placement: nodes, the topology built from them, and the placement rule.
#
# What lives here: frozen, slotted value types and their validation. A `Topology` is an
# immutable, normalised view (sorted by node id), so two topologies built from the same
# nodes in any order are equal and place identically.
#
# What must not: hashing or placement logic (see `_rendezvous.py` and `_place.py`), I/O,
# or imports from other CopyCat layers except `copycat.errors`. In particular this layer
# does not import `copycat.membership`: the host adapts a membership view into a
# `Topology` (one `NodeInfo` per live member).
"""Value types of `copycat.placement`."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, final

from copycat.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """One node as placement sees it.

    `node_id` is the node's non-zero id (never reused, never an address). `data_center`
    and `rack` are its labels; rack names are scoped by data center, so rack "r1" of
    "eu-1" and rack "r1" of "us-1" are different racks. `weight` scales the node's share
    of replicas (a node of weight 2 gets about twice the replicas of a node of weight 1);
    a node of weight 0 is *draining* and receives no replicas. Weights must be finite and
    non-negative.
    """

    node_id: int
    data_center: str
    rack: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.node_id, bool) or not isinstance(self.node_id, int):
            raise TypeError(f"node_id must be an int, not {type(self.node_id).__name__}")
        if self.node_id <= 0:
            raise ValueError(f"node_id must be positive, got {self.node_id}")
        if not isinstance(self.data_center, str) or not isinstance(self.rack, str):
            raise TypeError("data_center and rack must be str")
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(
                f"node {self.node_id}: weight must be finite and >= 0, got {self.weight}"
            )


@final
@dataclass(frozen=True, slots=True)
class Topology:
    """An immutable view of the cluster for placement: the nodes, sorted by node id.

    Build it with `Topology.of(nodes)`; the input order does not matter. Node ids must be
    unique. Every node that computes placement from an equal `Topology` (and the same
    rule and group ids) computes the same placement.
    """

    nodes: tuple[NodeInfo, ...]
    _by_id: Mapping[int, NodeInfo] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.nodes, key=lambda n: n.node_id))
        by_id: dict[int, NodeInfo] = {}
        for node in ordered:
            if node.node_id in by_id:
                raise ValueError(f"node id {node.node_id} appears twice in the topology")
            by_id[node.node_id] = node
        object.__setattr__(self, "nodes", ordered)
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))

    @classmethod
    def of(cls, nodes: Iterable[NodeInfo]) -> Topology:
        """The topology of `nodes` (any order; ids must be unique)."""
        return cls(tuple(nodes))

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def node(self, node_id: int) -> NodeInfo | None:
        """The node with `node_id`, or None when it is not in this topology."""
        return self._by_id.get(node_id)

    @property
    def node_ids(self) -> tuple[int, ...]:
        """Every node id, ascending."""
        return tuple(self._by_id)

    def without(self, *node_ids: int) -> Topology:
        """This topology minus the given nodes (absent ids are ignored)."""
        gone = set(node_ids)
        return Topology(tuple(n for n in self.nodes if n.node_id not in gone))

    def with_nodes(self, *nodes: NodeInfo) -> Topology:
        """This topology plus `nodes`, which replace nodes of the same id."""
        new = {n.node_id: n for n in nodes}
        kept = tuple(n for n in self.nodes if n.node_id not in new)
        return Topology(kept + tuple(new.values()))

    def tree(self) -> Mapping[str, Mapping[str, tuple[int, ...]]]:
        """Node ids by data center, then rack, each level sorted (nodes of weight 0
        included)."""
        tree: dict[str, dict[str, list[int]]] = {}
        for n in self.nodes:
            tree.setdefault(n.data_center, {}).setdefault(n.rack, []).append(n.node_id)
        return MappingProxyType(
            {
                dc: MappingProxyType({rack: tuple(ids) for rack, ids in sorted(racks.items())})
                for dc, racks in sorted(tree.items())
            }
        )


class RackSpread(enum.Enum):
    """What the rack rule does when a data center has fewer racks (with eligible nodes)
    than replicas to hold."""

    PREFERRED = "preferred"
    """Distinct racks whenever the data center has enough racks; otherwise spread as
    evenly as the racks allow: no rack holds more than the smallest per-rack cap `c` for
    which the racks can hold the data center's share (sum over racks of min(c, eligible
    nodes in the rack) >= share). All replicas are still placed."""
    REQUIRED = "required"
    """Never two replicas of a group in one rack; when the racks are too few,
    placement raises `NotEnoughNodesError`."""


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementRule:
    """How many replicas a group has and how they spread.

    `replicas`: the total number of replicas, >= 1. Default 3.

    `data_center_replicas`: how many distinct data centers the replicas spread over,
    between 1 and `replicas`; each chosen data center holds `replicas // d` or
    `replicas // d + 1` replicas (for example replicas=5 over d=3 data centers: 2, 2, 1).
    None (the default) spreads over as many data centers as the view has, up to
    `replicas`, the same way. A fixed d raises `NotEnoughNodesError` when fewer data
    centers can hold their share; None adapts to the view instead.

    `rack_spread`: the rack rule within each data center, see `RackSpread`. Default
    `RackSpread.PREFERRED` (distinct racks whenever there are enough of them).
    """

    replicas: int = 3
    data_center_replicas: int | None = None
    rack_spread: RackSpread = RackSpread.PREFERRED

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int):
            raise ConfigError("replicas", "must be an int")
        if self.replicas < 1:
            raise ConfigError("replicas", f"must be >= 1, got {self.replicas}")
        d = self.data_center_replicas
        if d is not None:
            if isinstance(d, bool) or not isinstance(d, int):
                raise ConfigError("data_center_replicas", "must be an int or None")
            if not 1 <= d <= self.replicas:
                raise ConfigError(
                    "data_center_replicas",
                    f"must be between 1 and replicas ({self.replicas}), got {d}",
                )
        if not isinstance(self.rack_spread, RackSpread):
            raise ConfigError("rack_spread", "must be a RackSpread")
