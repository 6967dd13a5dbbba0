"""A group's replica rule: how many replicas it asks for, fixed when it is created.

What lives here: `ReplicaRule` and its metadata-record form (kept by every member beside
raft, see `Host.group_meta`). What must not: placement arithmetic (`copycat.placement`)
or anything that sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgpack

_RULE_FORMAT: Final = 2
"""Format 2 adds the incarnation and the session limits; format 1 records still read."""
LEGACY_RULE_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class ReplicaRule:
    """What a group is, fixed for its life when it is created: `replicas` in total, over
    `data_center_replicas` data centers (None: as many as the cluster has); its
    `incarnation` (when and by whom it was created: two groups seen under one id are
    told apart by it, the younger has the larger one; 0 when unknown, a group created
    before incarnations existed); and the session table's limits every member applies
    (`session_ttl_entries`, `max_sessions`; 0: the member's own configuration), so that
    every member deduplicates the same way whatever its own configuration says."""

    replicas: int
    data_center_replicas: int | None = None
    incarnation: int = 0
    session_ttl_entries: int = 0
    max_sessions: int = 0

    def encode(self) -> bytes:
        """The group metadata record: msgpack `[2, replicas, dc replicas or 0,
        incarnation, session ttl, max sessions]`."""
        packed: bytes = msgpack.packb(
            [
                _RULE_FORMAT,
                self.replicas,
                self.data_center_replicas or 0,
                self.incarnation,
                self.session_ttl_entries,
                self.max_sessions,
            ]
        )
        return packed

    @staticmethod
    def decode(data: bytes | None) -> ReplicaRule | None:
        """The rule of a metadata record; None for none, or one this code cannot read
        (such a group is never topped up)."""
        if not data:
            return None
        try:
            items = msgpack.unpackb(data)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if not isinstance(items, list) or not items:
            return None
        if items[0] == LEGACY_RULE_FORMAT and len(items) == 3:
            items = [*items, 0, 0, 0]
        elif items[0] != _RULE_FORMAT or len(items) != 6:
            return None
        if not all(isinstance(v, int) and v >= 0 for v in items[1:]) or items[1] < 1:
            return None
        _, replicas, dc, incarnation, ttl, max_sessions = items
        return ReplicaRule(replicas, dc or None, incarnation, ttl, max_sessions)

    def ints(self) -> tuple[int, int, int, int, int]:
        """The rule as a control request carries it (`from_ints` reads it back)."""
        return (
            self.replicas,
            self.data_center_replicas or 0,
            self.incarnation,
            self.session_ttl_entries,
            self.max_sessions,
        )

    @staticmethod
    def from_ints(
        replicas: int, dc: int, incarnation: int = 0, ttl: int = 0, max_sessions: int = 0
    ) -> ReplicaRule | None:
        """The rule of a control request (replicas 0: no rule)."""
        if not replicas:
            return None
        return ReplicaRule(replicas, dc or None, incarnation, ttl, max_sessions)


RULE_INTS: Final = 5
"""How many integers `ReplicaRule.ints()` gives (control request bodies)."""


def new_incarnation(now_ms: int, random_bits: int) -> int:
    """A 63-bit incarnation: the creation time in milliseconds above 15 random bits, so
    that a younger group has a larger one (and two created in the same millisecond
    differ)."""
    return ((now_ms << 15) | (random_bits & 0x7FFF)) & ((1 << 63) - 1) or 1
