"""Thesis §6.2 and §4.2.3: a leader that cannot reach a quorum steps down, and
followers that hear from a leader ignore vote requests (leader leases)."""

from __future__ import annotations

from typing import Any

from copycat.raft import (
    AppendEntriesResponse,
    RequestVote,
    RequestVoteResponse,
    Role,
)

from ..harness import Network, of_type

CHECK_QUORUM_ONLY: dict[str, Any] = {"check_quorum": True, "pre_vote": False}


def test_leader_without_a_quorum_steps_down() -> None:
    """ "a leader in Raft steps down if an election timeout elapses without a successful
    round of heartbeats to a majority of its cluster; this allows clients to retry
    their requests with another server." (thesis §6.2)"""
    # init
    net = Network((1, 2, 3), **CHECK_QUORUM_ONLY)
    net.elect(1)
    net.isolate(1)

    # act: two election timeouts (the first check may still see the old acks)
    net.tick_all(20, nodes=(1,))

    # check
    assert net[1].role == Role.FOLLOWER
    assert net.raw(1).leader_id == 0


def test_leader_with_a_quorum_stays() -> None:
    """ "steps down if an election timeout elapses without a successful round of
    heartbeats to a majority" (thesis §6.2): one follower lost is not a majority."""
    # init
    net = Network((1, 2, 3), **CHECK_QUORUM_ONLY)
    net.elect(1)
    term = net[1].term
    net.isolate(3)

    # act
    net.tick_all(50, nodes=(1, 2))

    # check
    assert net[1].role == Role.LEADER
    assert net[1].term == term


def test_without_check_quorum_an_isolated_leader_stays() -> None:
    """The contrast for thesis §6.2: without the check, a cut-off leader keeps
    believing it leads (and clients keep waiting on it)."""
    # init
    net = Network((1, 2, 3), check_quorum=False, pre_vote=False)
    net.elect(1)
    net.isolate(1)

    # act
    net.tick_all(50, nodes=(1,))

    # check
    assert net[1].role == Role.LEADER


def test_follower_in_lease_ignores_a_vote_request() -> None:
    """ "if a server receives a RequestVote request within the minimum election timeout
    of hearing from a current leader, it does not update its term or grant its vote."
    (thesis §4.2.3)"""
    # init
    net = Network((1, 2, 3), **CHECK_QUORUM_ONLY)
    net.elect(1)
    term = net[2].term
    net.tick_all(3)

    # act
    net.step(
        RequestVote(
            term=term + 5,
            sender=3,
            to=2,
            last_log_index=net[2].last_index() + 9,
            last_log_term=term,
        )
    )
    net.process(2)

    # check
    assert net[2].term == term
    assert net[2].storage.hard_state.vote == 1
    assert net.raw(2).leader_id == 1
    assert not of_type(net.take(lambda m: m.sender == 2), RequestVoteResponse)


def test_follower_out_of_lease_grants_the_vote() -> None:
    """ "within the minimum election timeout of hearing from a current leader" (thesis
    §4.2.3): once an election timeout has passed without the leader, votes are
    granted again."""
    # init
    net = Network((1, 2, 3), **CHECK_QUORUM_ONLY)
    net.elect(1)
    term = net[2].term
    net.isolate(1)
    net.tick(2, 10)

    # act
    net.step(
        RequestVote(
            term=term + 1, sender=3, to=2, last_log_index=net[2].last_index(), last_log_term=term
        )
    )
    net.process(2)

    # check
    [response] = of_type(net.take(lambda m: m.sender == 2), RequestVoteResponse)
    assert not response.reject
    assert net[2].term == term + 1
    assert net[2].storage.hard_state.vote == 3


def test_leases_stop_a_partitioned_node_from_deposing_the_leader() -> None:
    """ "A server that is removed or partitioned ... can disrupt the cluster" by timing
    out and starting elections with higher terms; with leases "the leader will not be
    deposed" while it keeps contact with a majority (thesis §4.2.3)."""
    # init
    net = Network((1, 2, 3), **CHECK_QUORUM_ONLY)
    net.elect(1)
    term = net[1].term
    net.cut(3, 1)  # node 3 reaches node 2 only
    net.tick_all(1)

    # act: node 3 times out and campaigns, repeatedly
    net.tick_all(40)

    # check
    assert net[1].role == Role.LEADER
    assert net[1].term == term
    assert net[2].term == term
    assert net[3].term > term


def test_stale_leader_learns_the_new_term_and_steps_down() -> None:
    """ "If a candidate or leader discovers that its term is out of date, it immediately
    reverts to follower state" (§5.1); with check-quorum a follower answers a stale
    leader's heartbeat with its newer term so that the old leader learns it (etcd)."""
    # init: node 1 leads and is cut off; the others elect one of them
    net = Network((1, 2, 3), **CHECK_QUORUM_ONLY)
    net.elect(1)
    old_term = net[1].term
    net.isolate(1)
    net.tick_all(40, nodes=(2, 3))
    [stale, new_leader] = net.leaders()
    assert stale == 1
    new_term = net[new_leader].term
    assert new_term > old_term

    # act: only the stale leader's heartbeat goes out once the links are back
    net.heal()
    net.sent.clear()
    net.tick(1)
    net.stabilize()

    # check
    answers = [m for m in of_type(net.sent, AppendEntriesResponse) if m.to == 1]
    assert answers
    assert all(m.term == new_term for m in answers)
    assert net[1].role == Role.FOLLOWER
    assert net[1].term == new_term
    assert net.leaders() == [new_leader]
