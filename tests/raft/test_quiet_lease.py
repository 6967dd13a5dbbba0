"""`RawNode.credit_quiet_ticks`: a follower that slept (its group quiescent, no ticks)
for an election timeout without a word from its leader grants that leader no lease.
Woken by a candidate's pre-vote after the leader died, it grants it at once; a word
from the leader restores the lease; its own election clock is never moved (no
campaign sooner than its timeout)."""

from __future__ import annotations

import pytest

from copycat.raft import (
    Heartbeat,
    MemoryLog,
    RaftConfig,
    RawNode,
    RequestVote,
    RequestVoteResponse,
)

pytestmark = pytest.mark.timeout(10)

ELECTION_TICKS = 10


def _follower_of_node_1() -> RawNode:
    """Node 2 of a group {1, 2, 3}, a follower that heard from its leader, node 1, in
    term 1 (its bootstrap membership applied, so it would campaign on its timeout)."""
    log = MemoryLog.bootstrap([1, 2, 3])
    node = RawNode(RaftConfig(node_id=2, election_ticks=ELECTION_TICKS, heartbeat_ticks=1), log)
    while node.has_ready():
        rd = node.ready()
        if rd.entries:
            log.append(rd.entries)
        if rd.hard_state is not None:
            log.set_hard_state(rd.hard_state)
        node.advance(rd)
    assert node.promotable()
    node.step(Heartbeat(term=1, sender=1, to=2))
    node.advance(node.ready())
    assert node.leader_id == 1
    return node


def _pre_vote_answers(node: RawNode) -> list[bool]:
    """Node 3, as up to date, asks node 2 for a pre-vote in term 2; True per grant, False
    per refusal."""
    last = node.last_index()
    node.step(
        RequestVote(
            term=2,
            sender=3,
            to=2,
            last_log_index=last,
            last_log_term=node.term_at(last) or 0,
            pre_vote=True,
        )
    )
    rd = node.ready()
    node.advance(rd)
    return [not m.reject for m in rd.messages if isinstance(m, RequestVoteResponse)]


def test_a_follower_in_its_leaders_lease_ignores_a_pre_vote() -> None:
    node = _follower_of_node_1()
    node.credit_quiet_ticks(ELECTION_TICKS - 1)  # slept, but less than a timeout
    assert _pre_vote_answers(node) == []  # ignored: the lease holds


def test_a_follower_that_slept_an_election_timeout_grants_a_pre_vote() -> None:
    node = _follower_of_node_1()
    node.credit_quiet_ticks(ELECTION_TICKS)
    assert _pre_vote_answers(node) == [True]


def test_a_word_from_the_leader_restores_its_lease() -> None:
    node = _follower_of_node_1()
    node.credit_quiet_ticks(5 * ELECTION_TICKS)
    node.step(Heartbeat(term=1, sender=1, to=2))
    node.advance(node.ready())
    assert _pre_vote_answers(node) == []


def test_quiet_ticks_never_start_a_campaign_sooner() -> None:
    node = _follower_of_node_1()
    node.credit_quiet_ticks(5 * ELECTION_TICKS)
    for _ in range(ELECTION_TICKS - 1):  # less than the shortest randomized timeout
        node.tick()
    rd = node.ready()
    assert not [m for m in rd.messages if isinstance(m, RequestVote)]
    assert node.leader_id == 1
