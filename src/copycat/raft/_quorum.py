"""Quorum arithmetic for majority and joint configurations: which index a quorum has
acknowledged, and whether an election is won, lost or still open.

Pure functions over sets and dicts; tested against a naive oracle.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

INFINITE_INDEX: Final = 2**63 - 1
"""What an empty configuration has "acknowledged": anything (it never holds a joint
configuration's commit index back)."""


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority_committed(voters: Iterable[int], acked: Callable[[int], int]) -> int:
    """The largest index that a majority of `voters` has acknowledged."""
    indexes = sorted((acked(v) for v in voters), reverse=True)
    if not indexes:
        return INFINITE_INDEX
    return indexes[len(indexes) // 2]


def joint_committed(
    incoming: Iterable[int], outgoing: Iterable[int], acked: Callable[[int], int]
) -> int:
    """Both majorities of a joint configuration must acknowledge an index."""
    return min(majority_committed(incoming, acked), majority_committed(outgoing, acked))


def majority_vote(voters: frozenset[int] | set[int], votes: Mapping[int, bool]) -> VoteResult:
    """Won with a majority of grants, lost when a majority can no longer be reached."""
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        vote = votes.get(v)
        if vote is True:
            granted += 1
        elif vote is False:
            rejected += 1
    quorum = len(voters) // 2 + 1
    if granted >= quorum:
        return VoteResult.WON
    if len(voters) - rejected < quorum:
        return VoteResult.LOST
    return VoteResult.PENDING


def joint_vote(
    incoming: frozenset[int] | set[int],
    outgoing: frozenset[int] | set[int],
    votes: Mapping[int, bool],
) -> VoteResult:
    first = majority_vote(incoming, votes)
    second = majority_vote(outgoing, votes)
    if first == second:
        return first
    if VoteResult.LOST in (first, second):
        return VoteResult.LOST
    return VoteResult.PENDING
