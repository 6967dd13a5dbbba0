# The stable hash and the weighted rendezvous score that every placement decision rests on.
#
# What lives here: `node_hash` (64 bits of BLAKE2b over a documented byte string),
# `score` (weighted rendezvous, w / -ln(u)) and `rank` (nodes best first for one group).
# The byte layout is part of the placement contract: changing it moves every replica of
# every cluster, so it is versioned by the BLAKE2b personalisation string.
#
# What must not: Python's `hash()` (randomised per process), the global `random`, clocks,
# I/O, or anything that depends on the order the caller listed nodes in.
"""Weighted rendezvous (highest random weight) hashing for `copycat.placement`."""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

    from copycat.placement._model import NodeInfo

PERSONALISATION: Final = b"copycat-place/1"
"""BLAKE2b personalisation: the version of the placement hash. Bump it only with a
migration plan, since it moves nearly every replica."""

LEVEL_NODE: Final = b"node"
"""The hierarchy level a score is drawn at. Data centers and racks take the best score of
their nodes (see docs/placement.md), so only the node level is hashed."""

_U_BITS: Final = 52  # u = (k + 0.5) / 2**52 is exact in a double and never 0 or 1
_U_SCALE: Final = float(1 << _U_BITS)


def hash_key(group_id: str, level: bytes, name: str) -> bytes:
    """The bytes hashed for (`group_id`, `level`, `name`): each field as UTF-8, prefixed
    by its length as 4 big-endian bytes, so that no two triples share a key."""
    parts = (group_id.encode("utf-8"), level, name.encode("utf-8"))
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def node_hash(group_id: str, node_id: int) -> int:
    """64-bit BLAKE2b (personalised with `PERSONALISATION`) of
    `hash_key(group_id, b"node", str(node_id))`, read big-endian."""
    digest = hashlib.blake2b(
        hash_key(group_id, LEVEL_NODE, str(node_id)), digest_size=8, person=PERSONALISATION
    ).digest()
    return int.from_bytes(digest, "big")


def score(h: int, weight: float) -> float:
    """Weighted rendezvous score `weight / -ln(u)`, with `u = (top 52 bits of h + 0.5)
    / 2**52`, exactly representable and strictly inside (0, 1). For independent uniform `u`,
    the node with the highest score is node i with probability w_i / sum(w)."""
    u = ((h >> (64 - _U_BITS)) + 0.5) / _U_SCALE
    return weight / -math.log(u)


def rank(group_id: str, nodes: Iterable[NodeInfo]) -> list[tuple[NodeInfo, float, int]]:
    """`(node, score, hash)` for every node of positive weight, best first.

    When every node has the same weight the order is by the integer hash alone (exact on
    every platform: the score is increasing in the hash); otherwise by score, which
    involves one `math.log` per node. Ties are broken by hash, then node id.
    """
    scored = [
        (n, score(h, n.weight), h)
        for n in nodes
        if n.weight > 0
        for h in (node_hash(group_id, n.node_id),)
    ]
    if len({n.weight for n, _, _ in scored}) <= 1:
        scored.sort(key=lambda t: (-t[2], t[0].node_id))
    else:
        scored.sort(key=lambda t: (-t[1], -t[2], t[0].node_id))
    return scored
