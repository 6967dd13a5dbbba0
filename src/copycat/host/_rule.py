"""A group's replica rule: how many replicas it asks for, fixed when it is created.

What lives here: `ReplicaRule` and its metadata-record form (kept by every member beside
raft, see `Host.group_meta`). What must not: placement arithmetic (`copycat.placement`)
or anything that sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgpack

_RULE_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class ReplicaRule:
    """The replicas a group asks for, fixed for its life: `replicas` in total, over
    `data_center_replicas` data centers (None: as many as the cluster has)."""

    replicas: int
    data_center_replicas: int | None = None

    def encode(self) -> bytes:
        """The group metadata record (msgpack `[format, replicas, dc replicas or 0]`)."""
        packed: bytes = msgpack.packb([_RULE_FORMAT, self.replicas, self.data_center_replicas or 0])
        return packed

    @staticmethod
    def decode(data: bytes | None) -> ReplicaRule | None:
        """The rule of a metadata record; None for none, or one this code cannot read
        (such a group is never topped up)."""
        if not data:
            return None
        try:
            fmt, replicas, dc = msgpack.unpackb(data)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if fmt != _RULE_FORMAT or not isinstance(replicas, int) or not isinstance(dc, int):
            return None
        if replicas < 1 or dc < 0:
            return None
        return ReplicaRule(replicas, dc or None)

    def ints(self) -> tuple[int, int]:
        """The rule as a control request carries it (0: no rule; no data center count)."""
        return self.replicas, self.data_center_replicas or 0

    @staticmethod
    def from_ints(replicas: int, dc: int) -> ReplicaRule | None:
        return ReplicaRule(replicas, dc or None) if replicas else None
