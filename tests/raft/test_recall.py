"""`RawNode.recall`: a member opened again under a node id whose earlier member of the
group was deleted keeps that member's promises.

The story these tests tell (whole-cluster simulator, seed 11 before the fix): node 4
led term 3 of a group {2, 3, 4} and its acknowledgements committed entries 15 to 73;
it left (its replica deleted here), came back with an empty member, and voted in term 3
again, for node 2, whose log stopped at entry 14 of term 2. Node 2 led term 3 a second
time and overwrote committed entries.
"""

from __future__ import annotations

import pytest

from copycat.raft import (
    AppendEntries,
    AppendEntriesResponse,
    MemoryLog,
    RaftConfig,
    RawNode,
    RequestVote,
    RequestVoteResponse,
)

pytestmark = pytest.mark.timeout(10)


def _recalled() -> tuple[RawNode, MemoryLog]:
    log = MemoryLog()
    node = RawNode(RaftConfig(node_id=4, election_ticks=10, heartbeat_ticks=1), log)
    node.recall(term=3, vote=4, last_log_term=3, last_log_index=73)
    return node, log


def _answers(node: RawNode) -> list[object]:
    rd = node.ready()
    node.advance(rd)
    return list(rd.messages)


def _vote(node: RawNode, *, term: int, last_term: int, last_index: int) -> RequestVoteResponse:
    node.step(
        RequestVote(term=term, sender=2, to=4, last_log_index=last_index, last_log_term=last_term)
    )
    (answer,) = [m for m in _answers(node) if isinstance(m, RequestVoteResponse)]
    return answer


def test_the_recalled_term_and_vote_are_persisted_by_the_next_ready() -> None:
    node, _ = _recalled()
    rd = node.ready()
    assert rd.hard_state is not None
    assert (rd.hard_state.term, rd.hard_state.vote) == (3, 4)
    assert node.term == 3


def test_no_second_vote_in_the_recalled_term() -> None:
    node, _ = _recalled()
    _answers(node)
    assert _vote(node, term=3, last_term=3, last_index=73).reject


@pytest.mark.parametrize("pre_vote", [False, True])
def test_no_vote_for_a_candidate_behind_the_deleted_log(pre_vote: bool) -> None:
    node, _ = _recalled()
    _answers(node)
    node.step(
        RequestVote(term=4, sender=2, to=4, last_log_index=14, last_log_term=2, pre_vote=pre_vote)
    )
    (answer,) = [m for m in _answers(node) if isinstance(m, RequestVoteResponse)]
    assert answer.reject
    # The same index in the same term as the deleted log's last entry, but shorter.
    assert _vote(node, term=5, last_term=3, last_index=72).reject


def test_a_vote_for_a_candidate_as_up_to_date_as_the_deleted_log() -> None:
    node, _ = _recalled()
    _answers(node)
    assert not _vote(node, term=4, last_term=3, last_index=73).reject
    assert node.vote == 2


def test_a_leader_of_an_older_term_learns_it_is_stale() -> None:
    node, log = _recalled()
    _answers(node)
    node.step(AppendEntries(term=2, sender=2, to=4, prev_index=0, prev_term=0))
    answers = [m for m in _answers(node) if isinstance(m, AppendEntriesResponse)]
    assert [a.term for a in answers] == [3]  # the stale leader steps down on it
    assert log.last_index() == 0


def test_recall_never_lowers_a_term() -> None:
    node, _ = _recalled()
    _answers(node)
    node.recall(term=2, vote=9, last_log_term=1, last_log_index=5)
    assert (node.term, node.vote) == (3, 4)
    # The floor stays at the more up-to-date of the two deleted logs.
    assert _vote(node, term=4, last_term=3, last_index=72).reject
