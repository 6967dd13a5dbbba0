"""The control requests nodes send each other, in one table, with their typed replies.

What lives here: the method names (`Method`), and the codecs of replies that carry more
than "done" (a membership proof). Request bodies are tuples of 128-bit integers
(`encode_ints` / `decode_ints` in `_host`). What must not: the handlers themselves (they
live with the concern they serve: creation in the node, membership changes in `Host`,
repair in `_repair`, leave in the node).

| method | body | reply |
|---|---|---|
| create_group | (group, *rule, *voters) | the group's metadata record as the creator stores it |
| start_replica | (group, *rule) | empty |
| add_member | (group, node, voter 0/1) | the group's metadata record (empty when none) |
| remove_member | (group, node) | empty |
| lookup_group | (group,) | `encode_lookup`: whether it hosts a member, and the nodes it knows |
| membership_proof | (group,) | `encode_proof` |
| hand_over | (group, node) | `encode_flag`: whether a replacement took the place |

`*rule` is `ReplicaRule.ints()`: replicas, data center replicas (0: none asked),
incarnation (0: not fixed yet), session ttl, max sessions (0: the member's own).
An error travels as the transport's typed remote error, never as a reply value.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Final

import msgpack

from copycat.host._host import MembershipProof

if TYPE_CHECKING:
    from collections.abc import Iterable

_PROOF_FORMAT: Final = 1


class Method(StrEnum):
    """The control request methods (names on the wire; append only)."""

    CREATE_GROUP = "copycat.create_group"
    START_REPLICA = "copycat.start_replica"
    ADD_MEMBER = "copycat.add_member"
    REMOVE_MEMBER = "copycat.remove_member"
    LOOKUP = "copycat.lookup_group"
    MEMBERSHIP_PROOF = "copycat.membership_proof"
    HAND_OVER = "copycat.hand_over"


def encode_flag(value: bool) -> bytes:
    packed: bytes = msgpack.packb(bool(value))
    return packed


MAX_KNOWN_NODES: Final = 100_000
"""The most node ids a lookup reply may list."""


def encode_lookup(hosted: bool, known: Iterable[int], *, listed: bool = False) -> bytes:
    """A lookup reply: whether the node hosts a member of the group, the nodes it knows
    (what `KnownNodes` holds), which the asker adds to its own quorum, and whether a
    directory ever listed the group there (it exists, its hosts out of sight maybe)."""
    packed: bytes = msgpack.packb([bool(hosted), sorted(known), bool(listed)])
    return packed


def decode_lookup(body: bytes) -> tuple[bool, list[int], bool]:
    """A lookup reply: (hosted, known nodes, listed). A bare yes/no (a node of an
    earlier version) knows nobody and listed nothing. ValueError for anything else."""
    try:
        value = msgpack.unpackb(body)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed lookup reply: {exc}") from exc
    if isinstance(value, bool):
        return value, [], False
    if (
        not isinstance(value, list)
        or len(value) not in (2, 3)
        or not isinstance(value[0], bool)
        or not isinstance(value[1], list)
        or (len(value) == 3 and not isinstance(value[2], bool))
        or len(value[1]) > MAX_KNOWN_NODES
        or any(type(n) is not int or not 0 < n < 1 << 64 for n in value[1])
    ):
        raise ValueError("a lookup reply must be [hosted, [node ids], listed]")
    return value[0], value[1], len(value) == 3 and value[2]


def decode_flag(body: bytes) -> bool:
    """A yes/no reply; ValueError for anything else."""
    try:
        value = msgpack.unpackb(body)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed yes/no reply: {exc}") from exc
    if not isinstance(value, bool):
        raise ValueError(f"a yes/no reply must be a boolean, not {type(value).__name__}")
    return value


def encode_proof(proof: MembershipProof | None) -> bytes:
    """`[format, term, voters, learners]`, or `[format]` when the member answering
    cannot prove the group's configuration (it does not lead, or not yet provably)."""
    if proof is None:
        packed: bytes = msgpack.packb([_PROOF_FORMAT])
    else:
        packed = msgpack.packb(
            [_PROOF_FORMAT, proof.term, sorted(proof.voters), sorted(proof.learners)]
        )
    return packed


def decode_proof(body: bytes) -> MembershipProof | None:
    """The proof in a reply; ValueError for a malformed one."""
    try:
        items = msgpack.unpackb(body)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed membership proof: {exc}") from exc
    if not isinstance(items, list) or not items or items[0] != _PROOF_FORMAT:
        raise ValueError("a membership proof is [format, term, voters, learners] or [format]")
    if len(items) == 1:
        return None
    if len(items) != 4:
        raise ValueError("a membership proof is [format, term, voters, learners] or [format]")
    _, term, voters, learners = items
    if (
        not isinstance(term, int)
        or term < 1
        or not isinstance(voters, list)
        or not isinstance(learners, list)
        or not all(isinstance(n, int) and n > 0 for n in (*voters, *learners))
    ):
        raise ValueError("a membership proof holds a positive term and node ids")
    return MembershipProof(term=term, voters=frozenset(voters), learners=frozenset(learners))
