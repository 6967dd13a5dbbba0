"""Thesis §9.6: preventing disruptions when a server rejoins the cluster (Pre-Vote)."""

from __future__ import annotations

from typing import Any

from copycat.raft import (
    AppendEntries,
    RequestVote,
    RequestVoteResponse,
    Role,
)

from ..harness import Network, of_type

PRE_VOTE_ONLY: dict[str, Any] = {"pre_vote": True, "check_quorum": False}


def test_isolated_node_does_not_raise_its_term() -> None:
    """ "In the Pre-Vote algorithm, a candidate only increments its term if it first
    learns from a majority of the cluster that they would be willing to grant the
    candidate their votes" (thesis §9.6): cut off, a node times out again and again
    without ever raising its term."""
    # init
    net = Network((1, 2, 3), **PRE_VOTE_ONLY)
    net.elect(1)
    term = net[3].term
    net.isolate(3)
    net.sent.clear()

    # act: many election timeouts
    for _ in range(10):
        net.tick(3, 20)
        net.process(3)

    # check
    assert net[3].term == term
    assert net[3].storage.hard_state.term == term
    assert net[3].role == Role.PRE_CANDIDATE
    asks = [m for m in of_type(net.sent, RequestVote) if m.sender == 3]
    assert len(asks) >= 10
    assert all(m.pre_vote and m.term == term + 1 for m in asks)


def test_rejoining_node_does_not_disrupt_the_leader() -> None:
    """ "The Pre-Vote algorithm solves the issue of a partitioned server disrupting the
    cluster when it rejoins." (thesis §9.6) The others committed entries meanwhile, so
    they refuse the pre-vote, and the leader keeps its term."""
    # init
    net = Network((1, 2, 3), **PRE_VOTE_ONLY)
    net.elect(1)
    term = net[1].term
    net.isolate(3)
    net.propose(1, b"while away")
    net.tick(3, 40)
    net.process(3)

    # act
    net.heal()
    net.tick_all(30)

    # check
    assert net.leaders() == [1]
    assert all(n.term == term for n in net.nodes.values())
    assert net.data(3) == [b"while away"]


def test_without_pre_vote_a_rejoining_node_disrupts_the_leader() -> None:
    """The contrast that motivates thesis §9.6: "When the server rejoins the cluster,
    ... it will cause the leader to step down" when its term was raised meanwhile."""
    # init
    net = Network((1, 2, 3), pre_vote=False, check_quorum=False)
    net.elect(1)
    term = net[1].term
    net.isolate(3)
    net.propose(1, b"while away")
    net.tick(3, 40)
    net.process(3)
    assert net[3].term > term

    # act
    net.heal()
    net.tick_all(30)

    # check: leadership was lost once at least (a new term began)
    assert net[1].term > term


def test_pre_vote_grant_changes_neither_term_nor_vote() -> None:
    """ "a candidate would first ask other servers whether its log was up-to-date enough
    to get their vote" (thesis §9.6): answering changes nothing durable; the grant
    carries the term the candidate would campaign in."""
    # init
    net = Network((1, 2, 3), **PRE_VOTE_ONLY)
    before = net[1].storage.hard_state

    # act
    net.step(RequestVote(term=2, sender=2, to=1, last_log_index=3, last_log_term=1, pre_vote=True))
    net.process(1)

    # check
    [response] = of_type(net.take(), RequestVoteResponse)
    assert (response.pre_vote, response.reject, response.term) == (True, False, 2)
    assert net[1].term == 1
    assert net[1].storage.hard_state == before
    assert net[1].readies[-1].hard_state is None


def test_pre_vote_is_refused_to_a_less_up_to_date_log() -> None:
    """A pre-vote is granted only "if the candidate's log is sufficiently up-to-date"
    (thesis §9.6; the test of §5.4.1)."""
    # init
    net = Network((1, 2, 3), **PRE_VOTE_ONLY)
    net.elect(1)
    net.propose(1, b"x")
    last = net[2].last_index()

    # act
    net.step(
        RequestVote(
            term=net[2].term + 1,
            sender=3,
            to=2,
            last_log_index=last - 1,
            last_log_term=net[2].term,
            pre_vote=True,
        )
    )
    net.process(2)

    # check
    [response] = of_type(net.take(), RequestVoteResponse)
    assert response.reject
    assert response.pre_vote


def test_pre_candidate_with_a_majority_starts_a_real_election() -> None:
    """ "Only if the candidate believed it could get votes from a majority of the cluster
    would it increment its term and start a normal election." (thesis §9.6)"""
    # init
    net = Network((1, 2, 3), **PRE_VOTE_ONLY)
    net.raw(1).campaign()
    net.process(1)
    pre = of_type(net.take(), RequestVote)
    assert net.raw(1).status().role == Role.PRE_CANDIDATE
    assert net[1].term == 1
    assert all(m.pre_vote for m in pre)

    # act: one pre-vote granted (with its own, a majority)
    net.step(RequestVoteResponse(term=2, sender=2, to=1, reject=False, pre_vote=True))
    net.process(1)

    # check
    assert net[1].role == Role.CANDIDATE
    assert net[1].term == 2
    real = of_type(net.take(), RequestVote)
    assert sorted(m.to for m in real) == [2, 3]
    assert all(not m.pre_vote and m.term == 2 for m in real)


def test_pre_candidate_refused_by_a_majority_returns_to_follower() -> None:
    """ "a candidate only increments its term if it first learns from a majority of the
    cluster that they would be willing to grant the candidate their votes" (thesis
    §9.6): refused by a majority, it stays at its term as a follower."""
    # init
    net = Network((1, 2, 3), **PRE_VOTE_ONLY)
    net.raw(1).campaign()
    net.process(1)
    net.take()

    # act
    for voter in (2, 3):
        net.step(RequestVoteResponse(term=1, sender=voter, to=1, reject=True, pre_vote=True))

    # check
    assert net[1].role == Role.FOLLOWER
    assert net[1].term == 1


def test_pre_candidate_follows_a_leader_of_its_term() -> None:
    """A pre-candidate has not raised its term, so an append from a leader of that very
    term is legitimate (§5.2 applied to thesis §9.6) and ends the pre-election."""
    # init
    net = Network((1, 2, 3), **PRE_VOTE_ONLY)
    net.raw(1).campaign()
    net.process(1)
    net.take()

    # act
    net.step(AppendEntries(term=1, sender=2, to=1, prev_index=3, prev_term=1))

    # check
    assert net[1].role == Role.FOLLOWER
    assert net.raw(1).leader_id == 2
    assert net[1].term == 1


def test_pre_vote_elects_a_leader_in_one_call() -> None:
    """The normal path of thesis §9.6: pre-vote, then the election, then leadership,
    with the term raised exactly once."""
    # init
    net = Network((1, 2, 3), **PRE_VOTE_ONLY)

    # act
    net.elect(2)

    # check
    assert net[2].term == 2
    assert all(n.term == 2 for n in net.nodes.values())
    assert all(n.raw.leader_id == 2 for n in net.nodes.values())
