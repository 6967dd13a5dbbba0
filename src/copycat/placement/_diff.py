# The difference between a group's replicas today and its placement target.
#
# What lives here: `diff_replicas` and its result types, which the host's repair loop
# consumes: which replicas to add, which to remove, and one safe order to do it in, one
# membership change at a time.
#
# What must not: deciding *when* to repair (grace periods, leadership, learners are the
# host's), I/O, or imports from other CopyCat layers except `copycat.errors`.
"""Replica set differences for `copycat.placement`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from copycat.placement._model import Topology


class ChangeAction(enum.Enum):
    """One step of a replica change."""

    ADD = "add"
    """Start a replica on the node (as a learner until it has caught up, then a voter)."""
    REMOVE = "remove"
    """Remove the node's replica from the group."""


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaChange:
    """Add or remove the replica on `node_id`."""

    action: ChangeAction
    node_id: int


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaDiff:
    """What turns a group's current replica set into its target.

    `keep`: in both, in target order. `add`: in the target only, in target order (best
    first). `remove`: current only; nodes absent from the topology (dead or departed)
    first, then by node id.
    """

    keep: tuple[int, ...]
    add: tuple[int, ...]
    remove: tuple[int, ...]

    @property
    def unchanged(self) -> bool:
        """True when the current set already is the target."""
        return not self.add and not self.remove

    def steps(self) -> tuple[ReplicaChange, ...]:
        """One membership change at a time, in an order that never leaves the group with
        fewer replicas than the smaller of its current and target sizes: each removal
        follows an addition while there are additions left; surplus removals (the target
        is smaller) come last.

        The host performs them in this order, each after the previous one committed.
        """
        out: list[ReplicaChange] = []
        for i in range(max(len(self.add), len(self.remove))):
            if i < len(self.add):
                out.append(ReplicaChange(action=ChangeAction.ADD, node_id=self.add[i]))
            if i < len(self.remove):
                out.append(ReplicaChange(action=ChangeAction.REMOVE, node_id=self.remove[i]))
        return tuple(out)


def diff_replicas(
    current: Collection[int],
    target: Sequence[int],
    *,
    topology: Topology | None = None,
) -> ReplicaDiff:
    """The changes from `current` (any order) to `target` (a `place` result, best first).

    With `topology`, removals of nodes absent from it (dead or departed) come first, so
    repair replaces the dead before it moves live replicas.
    """
    now = set(current)
    goal = list(dict.fromkeys(target))
    wanted = set(goal)

    def removal_order(node_id: int) -> tuple[bool, int]:
        return (topology is None or node_id in topology, node_id)

    return ReplicaDiff(
        keep=tuple(n for n in goal if n in now),
        add=tuple(n for n in goal if n not in now),
        remove=tuple(sorted(now - wanted, key=removal_order)),
    )
