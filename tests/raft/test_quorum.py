"""Quorum arithmetic (`copycat.raft._quorum`) against deliberately naive oracles.

The oracles count by brute force: the committed index is the largest candidate index
that enough voters have acknowledged, and an election is decided by enumerating every
way the missing votes could still go. (etcd quorum/quick_test.go)
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copycat.raft._quorum import (
    INFINITE_INDEX,
    VoteResult,
    joint_committed,
    joint_vote,
    majority_committed,
    majority_vote,
)

WON, LOST, PENDING = VoteResult.WON, VoteResult.LOST, VoteResult.PENDING

# -- naive oracles ------------------------------------------------------------------------


def naive_committed(configs: list[set[int]], acked: dict[int, int]) -> int:
    """Largest index i such that in every non-empty config more than half of the voters
    acknowledged at least i; tried by brute force over every index that could be it."""
    candidates = {0, INFINITE_INDEX} | {acked.get(v, 0) for c in configs for v in c}
    best = -1
    for i in candidates:
        if all(not c or 2 * sum(1 for v in c if acked.get(v, 0) >= i) > len(c) for c in configs):
            best = max(best, i)
    return best


def naive_vote(configs: list[set[int]], votes: dict[int, bool]) -> VoteResult:
    """WON if the votes cast already win every config; LOST if no way of casting the
    missing votes wins them all; PENDING otherwise."""

    def wins(cast: dict[int, bool]) -> bool:
        return all(not c or 2 * sum(1 for v in c if cast.get(v) is True) > len(c) for c in configs)

    if wins(votes):
        return WON
    voters = set().union(*configs)
    missing = sorted(v for v in voters if v not in votes)
    for outcome in itertools.product((True, False), repeat=len(missing)):
        if wins({**votes, **dict(zip(missing, outcome, strict=True))}):
            return PENDING
    return LOST


# -- table tests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("voters", "acked", "want"),
    [
        ({1}, {1: 0}, 0),
        ({1}, {1: 7}, 7),
        ({1, 2}, {1: 5, 2: 3}, 3),
        ({1, 2, 3}, {1: 5, 2: 3, 3: 1}, 3),
        ({1, 2, 3}, {1: 5, 2: 5, 3: 1}, 5),
        ({1, 2, 3}, {1: 9}, 0),  # nodes 2 and 3 acked nothing
        ({1, 2, 3, 4}, {1: 4, 2: 3, 3: 2, 4: 1}, 2),
        ({1, 2, 3, 4, 5}, {1: 10, 2: 10, 3: 2, 4: 1, 5: 1}, 2),
        ({1, 2, 3, 4, 5}, {1: 10, 2: 10, 3: 10, 4: 1, 5: 1}, 10),
    ],
)
def test_majority_committed_table(voters: set[int], acked: dict[int, int], want: int) -> None:
    assert majority_committed(voters, lambda v: acked.get(v, 0)) == want


def test_empty_config_has_acknowledged_everything() -> None:
    assert majority_committed(set(), lambda v: 0) == INFINITE_INDEX
    # ... so it never holds back the other half of a joint configuration.
    assert joint_committed({1, 2, 3}, set(), {1: 4, 2: 4, 3: 1}.__getitem__) == 4
    assert joint_committed(set(), {1, 2, 3}, {1: 4, 2: 4, 3: 1}.__getitem__) == 4
    assert joint_committed(set(), set(), lambda v: 0) == INFINITE_INDEX


@pytest.mark.parametrize(
    ("incoming", "outgoing", "acked", "want"),
    [
        # The outgoing majority {1,2,3} has 5, the incoming {3,4,5} only 1: min wins.
        ({3, 4, 5}, {1, 2, 3}, {1: 5, 2: 5, 3: 1, 4: 1, 5: 0}, 1),
        ({3, 4, 5}, {1, 2, 3}, {1: 5, 2: 5, 3: 5, 4: 5, 5: 0}, 5),
        ({1, 2, 3}, {1, 2, 3}, {1: 3, 2: 2, 3: 1}, 2),
        ({1}, {2}, {1: 8, 2: 6}, 6),
    ],
)
def test_joint_committed_table(
    incoming: set[int], outgoing: set[int], acked: dict[int, int], want: int
) -> None:
    assert joint_committed(incoming, outgoing, acked.__getitem__) == want


@pytest.mark.parametrize(
    ("voters", "votes", "want"),
    [
        (set(), {}, WON),
        (set(), {1: False}, WON),
        ({1}, {}, PENDING),
        ({1}, {1: True}, WON),
        ({1}, {1: False}, LOST),
        ({1, 2}, {1: True}, PENDING),
        ({1, 2}, {1: True, 2: False}, LOST),
        ({1, 2, 3}, {1: True, 2: True}, WON),
        ({1, 2, 3}, {1: True, 2: False}, PENDING),
        ({1, 2, 3}, {1: False, 2: False}, LOST),
        ({1, 2, 3}, {4: True, 5: True}, PENDING),  # votes of non-voters do not count
        ({1, 2, 3, 4}, {1: True, 2: True}, PENDING),
        ({1, 2, 3, 4}, {1: False, 2: False}, LOST),
    ],
)
def test_majority_vote_table(voters: set[int], votes: dict[int, bool], want: VoteResult) -> None:
    assert majority_vote(voters, votes) == want


@pytest.mark.parametrize(
    ("incoming", "outgoing", "votes", "want"),
    [
        ({1, 2, 3}, set(), {1: True, 2: True}, WON),
        ({1, 2, 3}, {3, 4, 5}, {1: True, 2: True}, PENDING),
        ({1, 2, 3}, {3, 4, 5}, {1: True, 2: True, 3: True}, PENDING),
        ({1, 2, 3}, {3, 4, 5}, {1: True, 2: True, 3: True, 4: True}, WON),
        ({1, 2, 3}, {3, 4, 5}, {1: True, 2: True, 4: False, 5: False}, LOST),
        ({1, 2, 3}, {3, 4, 5}, {1: False, 2: False, 4: True, 5: True}, LOST),
        ({1, 2, 3}, {1, 2, 3}, {1: True, 3: True}, WON),
    ],
)
def test_joint_vote_table(
    incoming: set[int], outgoing: set[int], votes: dict[int, bool], want: VoteResult
) -> None:
    assert joint_vote(incoming, outgoing, votes) == want


# -- properties against the oracles ------------------------------------------------------

ids = st.integers(1, 9)
voter_sets = st.sets(ids, max_size=7)
acks = st.dictionaries(ids, st.integers(0, 12))
vote_maps = st.dictionaries(ids, st.booleans())


@settings(max_examples=300)
@given(voters=voter_sets, acked=acks)
def test_majority_committed_matches_oracle(voters: set[int], acked: dict[int, int]) -> None:
    assert majority_committed(voters, lambda v: acked.get(v, 0)) == naive_committed([voters], acked)


@settings(max_examples=300)
@given(incoming=voter_sets, outgoing=voter_sets, acked=acks)
def test_joint_committed_matches_oracle(
    incoming: set[int], outgoing: set[int], acked: dict[int, int]
) -> None:
    got = joint_committed(incoming, outgoing, lambda v: acked.get(v, 0))
    assert got == naive_committed([incoming, outgoing], acked)


@settings(max_examples=300)
@given(voters=voter_sets, votes=vote_maps)
def test_majority_vote_matches_oracle(voters: set[int], votes: dict[int, bool]) -> None:
    assert majority_vote(frozenset(voters), votes) == naive_vote([voters], votes)


@settings(max_examples=300)
@given(incoming=voter_sets, outgoing=voter_sets, votes=vote_maps)
def test_joint_vote_matches_oracle(
    incoming: set[int], outgoing: set[int], votes: dict[int, bool]
) -> None:
    assert joint_vote(incoming, outgoing, votes) == naive_vote([incoming, outgoing], votes)


@settings(max_examples=200)
@given(incoming=voter_sets, outgoing=voter_sets, acked=acks)
def test_joint_is_symmetric_and_never_exceeds_either_half(
    incoming: set[int], outgoing: set[int], acked: dict[int, int]
) -> None:
    def get(v: int) -> int:
        return acked.get(v, 0)

    joint = joint_committed(incoming, outgoing, get)
    assert joint == joint_committed(outgoing, incoming, get)
    assert joint <= majority_committed(incoming, get)
    assert joint <= majority_committed(outgoing, get)
    # A joint config whose halves are equal behaves exactly like one majority config.
    assert joint_committed(incoming, incoming, get) == majority_committed(incoming, get)
