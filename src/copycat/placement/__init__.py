# Placement: where the replicas of each raft group go.
#
# What lives here: re-exports only. The input types (`NodeInfo`, `Topology`,
# `PlacementRule`, `RackSpread`) and the pure functions (`place`, `place_groups`,
# `violations`, `node_hash`, `score`).
#
# What must not: I/O of any kind, clocks, randomness, or imports from other CopyCat
# layers except `copycat.errors`. Placement sits above membership in the design but does
# not import it: the host adapts a membership `View` into a `Topology`.
"""Deterministic, CRUSH-style replica placement: weighted rendezvous hashing down the
data center -> rack -> node hierarchy, so any node computes the same placement from the
same view. See docs/placement.md.
"""

from __future__ import annotations

from copycat.placement._model import NodeInfo as NodeInfo
from copycat.placement._model import PlacementRule as PlacementRule
from copycat.placement._model import RackSpread as RackSpread
from copycat.placement._model import Topology as Topology
from copycat.placement._place import DEFAULT_LOAD_FACTOR as DEFAULT_LOAD_FACTOR
from copycat.placement._place import place as place
from copycat.placement._place import place_groups as place_groups
from copycat.placement._place import violations as violations
from copycat.placement._rendezvous import node_hash as node_hash
from copycat.placement._rendezvous import score as score

__all__ = [
    "DEFAULT_LOAD_FACTOR",
    "NodeInfo",
    "PlacementRule",
    "RackSpread",
    "Topology",
    "node_hash",
    "place",
    "place_groups",
    "score",
    "violations",
]
