"""Thesis §3.10: leadership transfer (TimeoutNow)."""

from __future__ import annotations

import pytest

from copycat.errors import ProposalDroppedError
from copycat.raft import (
    AppendEntries,
    AppendEntriesResponse,
    RequestVote,
    Role,
    TimeoutNow,
    TransferLeader,
)

from ..harness import Network, of_type


def test_transfer_to_an_up_to_date_follower() -> None:
    """ "The prior leader sends a TimeoutNow request to the target server. This request
    has the same effect as the target server's election timer firing: the target server
    starts a new election (incrementing its term and becoming a candidate)." (thesis
    §3.10) With pre-vote and leases on, as by default: the target's campaign skips the
    pre-vote and the others' leases."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.propose(1, b"x")
    term = net[1].term
    net.sent.clear()

    # act
    net.raw(1).transfer_leader(2)
    net.stabilize()

    # check
    assert isinstance(net.sent[0], TimeoutNow)
    assert net.sent[0].to == 2
    votes = of_type(net.sent, RequestVote)
    assert votes
    assert all(m.transfer and not m.pre_vote and m.term == term + 1 for m in votes)
    assert net.leaders() == [2]
    assert net[2].term == term + 1
    assert net[1].role == Role.FOLLOWER
    net.propose(2, b"y")
    assert all(net.data(i) == [b"x", b"y"] for i in net.nodes)


def test_transfer_to_a_lagging_follower_waits_for_it_to_catch_up() -> None:
    """ "The prior leader transfers all of its log entries to the target server, using
    the normal log replication algorithm. ... Once the target server has caught up with
    the prior leader's log, the prior leader sends it a TimeoutNow request." (thesis
    §3.10)"""
    # init: node 3 misses the last entries
    net = Network((1, 2, 3))
    leader = net.elect(1)
    net.drop(lambda m: m.to == 3 and isinstance(m, AppendEntries))
    net.propose(1, b"a", b"b", b"c")
    net.heal()
    assert net[3].last_index() < leader.last_index()
    last = leader.last_index()
    net.sent.clear()

    # act
    net.raw(1).transfer_leader(3)
    net.stabilize()

    # check: no TimeoutNow before node 3 acknowledged the leader's last entry
    position = next(i for i, m in enumerate(net.sent) if isinstance(m, TimeoutNow))
    assert net.sent[position].to == 3
    caught_up = [
        i
        for i, m in enumerate(net.sent[:position])
        if isinstance(m, AppendEntriesResponse) and m.sender == 3 and m.index == last
    ]
    assert caught_up
    assert net.leaders() == [3]
    assert net.data(3) == [b"a", b"b", b"c"]


def test_proposals_are_refused_during_a_transfer() -> None:
    """ "The prior leader stops accepting new client requests." (thesis §3.10, step 1)"""
    # init: the target is away, so the transfer stays pending
    net = Network((1, 2, 3))
    leader = net.elect(1)
    net.isolate(3)
    net.raw(1).transfer_leader(3)
    net.stabilize()
    assert net.raw(1).status().lead_transferee == 3
    last = leader.last_index()

    # act / check: local proposals raise
    with pytest.raises(ProposalDroppedError, match="transferred"):
        net.raw(1).propose(b"x")

    # act / check: forwarded ones are counted (the follower cannot be told)
    net.propose(2, b"y")
    assert net.raw(1).status().dropped_proposals == 2
    assert leader.last_index() == last


def test_transfer_is_aborted_after_an_election_timeout() -> None:
    """ "If the transfer does not complete within about an election timeout, the prior
    leader aborts the transfer and resumes accepting client requests." (thesis §3.10)"""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.isolate(3)
    net.raw(1).transfer_leader(3)
    net.stabilize()

    # act
    net.tick_all(10, nodes=(1, 2))

    # check
    assert net.raw(1).status().lead_transferee == 0
    assert net[1].role == Role.LEADER
    net.propose(1, b"x")
    assert net.data(1) == [b"x"]


def test_transfer_request_at_a_follower_is_forwarded_to_the_leader() -> None:
    """Leadership transfer is asked of the leader (thesis §3.10); a follower that is
    asked passes the request on."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.sent.clear()

    # act
    net.raw(2).transfer_leader(2)
    net.stabilize()

    # check
    forwarded = of_type(net.sent, TransferLeader)
    assert [(m.to, m.target) for m in forwarded] == [(1, 2)]
    assert net.leaders() == [2]


@pytest.mark.parametrize("target", [1, 4, 9])
def test_transfer_to_self_a_learner_or_a_stranger_is_ignored(target: int) -> None:
    """The target of a transfer must be a voter that can win an election (thesis
    §3.10): the leader itself, a learner (4) or a non-member (9) are ignored."""
    # init
    net = Network((1, 2, 3), learners=(4,))
    net.elect(1)
    net.sent.clear()

    # act
    net.raw(1).transfer_leader(target)
    net.stabilize()

    # check
    assert net.raw(1).status().lead_transferee == 0
    assert not of_type(net.sent, TimeoutNow)
    assert net.leaders() == [1]
    net.propose(1, b"x")
    assert net.data(1) == [b"x"]


def test_timeout_now_makes_a_learner_do_nothing() -> None:
    """ "the target server starts a new election" (thesis §3.10) only if it can: a
    learner that receives TimeoutNow does not campaign."""
    # init
    net = Network((1, 2, 3), learners=(4,))
    net.elect(1)
    term = net[4].term

    # act
    net.step(TimeoutNow(term=term, sender=1, to=4))
    net.process(4)

    # check
    assert net[4].role == Role.FOLLOWER
    assert net[4].term == term
    assert not of_type(net.take(lambda m: m.sender == 4), RequestVote)
