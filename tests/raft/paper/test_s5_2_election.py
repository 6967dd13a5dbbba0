"""Raft paper §5.1-§5.2: terms and leader election (the plain algorithm: no pre-vote,
no leader leases; those have their own files)."""

from __future__ import annotations

import pytest

from copycat.raft import (
    NONE,
    AppendEntries,
    DeliberateBugs,
    Heartbeat,
    RequestVote,
    RequestVoteResponse,
    Role,
)

from ..harness import BASIC, Network, of_type


def test_servers_start_as_followers() -> None:
    """ "When servers start up, they begin as followers." (§5.2)"""
    # init / act
    net = Network((1, 2, 3), **BASIC)

    # check
    for node in net.nodes.values():
        assert node.role == Role.FOLLOWER
        assert node.raw.leader_id == NONE
        assert node.term == 1


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
def test_term_is_updated_from_a_newer_message(role: Role) -> None:
    """ "If one server's current term is smaller than the other's, then it updates its
    current term to the larger value. If a candidate or leader discovers that its term
    is out of date, it immediately reverts to follower state." (§5.1)"""
    # init
    net = Network((1, 2, 3), **BASIC)
    if role == Role.LEADER:
        net.elect(1)
    elif role == Role.CANDIDATE:
        net.raw(1).campaign()
        net.process(1)
        net.take()
    assert net[1].role == role
    newer = net[1].term + 5

    # act
    net.step(AppendEntries(term=newer, sender=2, to=1, prev_index=0, prev_term=0))

    # check
    assert net[1].term == newer
    assert net[1].role == Role.FOLLOWER
    assert net.raw(1).leader_id == 2


def test_a_request_with_a_stale_term_is_rejected() -> None:
    """ "If a server receives a request with a stale term number, it rejects the
    request." (§5.1) Without pre-vote and check-quorum the core ignores it, as etcd
    does: nothing is appended and no leader is adopted."""
    # init
    net = Network((1, 2, 3), **BASIC)
    net.elect(1)
    net.elect(2)  # node 2 leads term 3
    before = net[3].log()
    assert net[3].term == 3

    # act: a deposed leader of term 2 still sends an append
    stale = net[3].last_index()
    net.step(
        AppendEntries(
            term=2,
            sender=1,
            to=3,
            prev_index=stale,
            prev_term=net[3].log_terms()[-1],
            entries=(),
            commit=stale,
        )
    )
    net.process(3)

    # check
    assert net[3].log() == before
    assert net[3].term == 3
    assert net.raw(3).leader_id == 2
    assert not [m for m in net.inflight if m.to == 1]


def test_leader_broadcasts_heartbeats() -> None:
    """ "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log
    entries) to all followers in order to maintain their authority." (§5.2)"""
    # init
    net = Network((1, 2, 3), heartbeat_ticks=2, **BASIC)
    net.elect(1)
    net.sent.clear()

    # act
    net.tick(1, 2)
    net.process(1)

    # check
    beats = of_type(net.sent, Heartbeat)
    assert sorted(m.to for m in beats) == [2, 3]
    assert all(m.term == net[1].term for m in beats)
    assert not of_type(net.sent, AppendEntries)


def test_heartbeats_keep_followers_from_campaigning() -> None:
    """ "A server remains in follower state as long as it receives valid RPCs from a
    leader or candidate." (§5.2)"""
    # init
    net = Network((1, 2, 3), **BASIC)
    net.elect(1)
    term = net[1].term

    # act: five election timeouts with a live leader
    net.tick_all(50)

    # check
    assert net.leaders() == [1]
    assert all(n.term == term for n in net.nodes.values())


@pytest.mark.parametrize("start_as", [Role.FOLLOWER, Role.CANDIDATE])
def test_nonleader_starts_an_election_after_the_election_timeout(start_as: Role) -> None:
    """ "If a follower receives no communication over a period of time called the
    election timeout, then it assumes there is no viable leader and begins an election
    to choose a new leader. To begin an election, a follower increments its current
    term and transitions to candidate state. It then votes for itself and issues
    RequestVote RPCs in parallel to each of the other servers in the cluster." And a
    candidate that wins no election "will time out and start a new election by
    incrementing its term and initiating another round of RequestVote RPCs." (§5.2)"""
    # init
    net = Network((1, 2, 3), **BASIC)
    net.isolate(1)
    if start_as == Role.CANDIDATE:
        net.campaign(1)
    assert net[1].role == start_as
    term = net[1].term
    net.sent.clear()

    # act: the timeout is drawn from [election_ticks, 2 * election_ticks)
    net.tick(1, 2 * 10)
    net.process(1)

    # check
    assert net[1].role == Role.CANDIDATE
    assert net[1].term == term + 1
    assert net[1].storage.hard_state.vote == 1
    votes = of_type(net.sent, RequestVote)
    assert sorted(m.to for m in votes) == [2, 3]
    assert all(m.term == term + 1 and not m.pre_vote for m in votes)


@pytest.mark.parametrize(
    ("size", "votes", "expected"),
    [
        # wins with a majority of votes
        (1, {}, Role.LEADER),
        (3, {2: True, 3: True}, Role.LEADER),
        (3, {2: True}, Role.LEADER),
        (5, {2: True, 3: True, 4: True, 5: True}, Role.LEADER),
        (5, {2: True, 3: True}, Role.LEADER),
        # loses when a majority refused
        (3, {2: False, 3: False}, Role.FOLLOWER),
        (5, {2: False, 3: False, 4: False, 5: False}, Role.FOLLOWER),
        (5, {2: True, 3: False, 4: False, 5: False}, Role.FOLLOWER),
        # undecided: stays a candidate
        (3, {}, Role.CANDIDATE),
        (5, {2: True}, Role.CANDIDATE),
        (5, {2: False, 3: False}, Role.CANDIDATE),
        (5, {}, Role.CANDIDATE),
    ],
)
def test_election_outcome_of_one_round_of_votes(
    size: int, votes: dict[int, bool], expected: Role
) -> None:
    """ "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term." The candidate continues "until one
    of three things happens: (a) it wins the election, (b) another server establishes
    itself as leader, or (c) a period of time goes by with no winner." (§5.2)"""
    # init
    net = Network(range(1, size + 1), **BASIC)
    net.raw(1).campaign()
    net.process(1)
    net.take()
    term = net[1].term

    # act
    for voter, granted in votes.items():
        net.step(RequestVoteResponse(term=term, sender=voter, to=1, reject=not granted))

    # check
    assert net[1].role == expected
    assert net[1].term == term


@pytest.mark.parametrize(
    ("voted_for", "candidate", "granted"),
    [(NONE, 2, True), (NONE, 3, True), (2, 2, True), (3, 3, True), (2, 3, False), (3, 2, False)],
)
def test_a_follower_votes_for_at_most_one_candidate_per_term(
    voted_for: int, candidate: int, granted: bool
) -> None:
    """ "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." (§5.2)"""
    # init: node 1 at term 2, having voted for `voted_for` (or nobody)
    net = Network((1, 2, 3), **BASIC)
    if voted_for != NONE:
        net.step(RequestVote(term=2, sender=voted_for, to=1, last_log_index=3, last_log_term=1))
        net.process(1)
        net.take()
    else:
        net.step(Heartbeat(term=2, sender=2, to=1))
        net.process(1)
        net.take()
        net.restart(1)  # forget the leader, keep term 2 and no vote
    assert net[1].term == 2

    # act
    net.step(RequestVote(term=2, sender=candidate, to=1, last_log_index=3, last_log_term=1))
    net.process(1)

    # check
    [response] = of_type(net.take(), RequestVoteResponse)
    assert response.to == candidate
    assert response.reject is not granted
    assert net[1].storage.hard_state.vote == (candidate if granted else voted_for)


def test_second_vote_check_fails_with_the_double_vote_bug() -> None:
    """The check above can fail: with the deliberate bug `double_vote` a follower that
    voted for node 2 in term 2 also grants its vote to node 3 in term 2 (§5.2)."""
    # init
    net = Network((1, 2, 3), bugs=DeliberateBugs(double_vote=True), **BASIC)
    net.step(RequestVote(term=2, sender=2, to=1, last_log_index=3, last_log_term=1))
    net.process(1)
    net.take()

    # act
    net.step(RequestVote(term=2, sender=3, to=1, last_log_index=3, last_log_term=1))
    net.process(1)

    # check
    [response] = of_type(net.take(), RequestVoteResponse)
    assert not response.reject


def test_vote_is_persisted_before_the_response_leaves() -> None:
    """Figure 2, "Persistent state on all servers: (Updated on stable storage before
    responding to RPCs)": currentTerm and votedFor. The ready that carries a granted
    vote carries the hard state recording it, so the host persists it first."""
    # init
    net = Network((1, 2, 3), **BASIC)

    # act
    net.step(RequestVote(term=2, sender=3, to=1, last_log_index=3, last_log_term=1))
    net.process(1)

    # check
    rd = net[1].readies[-1]
    assert of_type(rd.messages, RequestVoteResponse)
    assert rd.hard_state is not None
    assert (rd.hard_state.term, rd.hard_state.vote) == (2, 3)
    assert rd.must_sync()


def test_vote_survives_a_restart() -> None:
    """ "Each server will vote for at most one candidate in a given term" holds across
    crashes because votedFor is persistent state (Figure 2, §5.2)."""
    # init
    net = Network((1, 2, 3), **BASIC)
    net.step(RequestVote(term=2, sender=2, to=1, last_log_index=3, last_log_term=1))
    net.process(1)
    net.take()

    # act
    net.restart(1)
    net.step(RequestVote(term=2, sender=3, to=1, last_log_index=3, last_log_term=1))
    net.process(1)

    # check
    [response] = of_type(net.take(), RequestVoteResponse)
    assert response.reject
    assert net[1].storage.hard_state.vote == 2


@pytest.mark.parametrize("leader_term_offset", [0, 1])
def test_candidate_falls_back_to_follower_on_a_legitimate_leader(
    leader_term_offset: int,
) -> None:
    """ "While waiting for votes, a candidate may receive an AppendEntries RPC from
    another server claiming to be leader. If the leader's term (included in its RPC) is
    at least as large as the candidate's current term, then the candidate recognizes
    the leader as legitimate and returns to follower state." (§5.2)"""
    # init
    net = Network((1, 2, 3), **BASIC)
    net.raw(1).campaign()
    net.process(1)
    net.take()
    assert net.raw(1).status().role == Role.CANDIDATE
    term = net[1].term + leader_term_offset

    # act
    net.step(AppendEntries(term=term, sender=2, to=1, prev_index=3, prev_term=1))

    # check
    assert net[1].role == Role.FOLLOWER
    assert net[1].term == term
    assert net.raw(1).leader_id == 2


def test_candidate_ignores_an_append_from_an_older_term() -> None:
    """ "If the term in the RPC is smaller than the candidate's current term, then the
    candidate rejects the RPC and continues in candidate state." (§5.2)"""
    # init
    net = Network((1, 2, 3), **BASIC)
    net.raw(1).campaign()
    net.process(1)
    net.take()
    term = net[1].term

    # act
    net.step(AppendEntries(term=term - 1, sender=2, to=1, prev_index=3, prev_term=1))

    # check
    assert net[1].role == Role.CANDIDATE
    assert net[1].term == term


def test_split_vote_then_a_new_election_elects_one_leader() -> None:
    """ "If many followers become candidates at the same time, votes could be split so
    that no candidate obtains a majority. When this happens, each candidate will time
    out and start a new election by incrementing its term." (§5.2)"""
    # init: a four-node group; 1 and 3 campaign at once, each gets one other vote
    net = Network((1, 2, 3, 4), **BASIC)
    net.cut(1, 4)
    net.cut(3, 2)
    net.cut(1, 3)
    net.raw(1).campaign()
    net.raw(3).campaign()
    net.stabilize()
    assert net[1].role == Role.CANDIDATE
    assert net[3].role == Role.CANDIDATE
    assert net.leaders() == []
    net.heal()

    # act: time passes; the first to time out wins the next term
    for _ in range(100):
        net.tick_all(1)
        if net.leaders():
            break

    # check
    [leader] = net.leaders()
    assert net[leader].term >= 3
    assert all(n.raw.leader_id == leader for n in net.nodes.values())


def test_election_timeouts_are_randomized() -> None:
    """ "Raft uses randomized election timeouts to ensure that split votes are rare and
    that they are resolved quickly. ... election timeouts are chosen randomly from a
    fixed interval" (§5.2); here [election_ticks, 2 * election_ticks)."""
    # init
    net = Network((1, 2, 3), **BASIC)
    net.isolate(1)
    timeouts: set[int] = set()

    for _ in range(200):
        # act: hear from a leader of a new term, then wait for the timeout
        term = net[1].term + 1
        net.step(Heartbeat(term=term, sender=2, to=1))
        net.process(1)
        ticks = 0
        while net[1].role == Role.FOLLOWER:
            net.tick(1)
            ticks += 1
            assert ticks < 100
        net.process(1)
        timeouts.add(ticks)

    # check
    assert timeouts <= set(range(10, 20))
    assert len(timeouts) >= 8


def test_usually_only_one_follower_times_out_first() -> None:
    """ "Election timeouts are chosen randomly from a fixed interval ... This spreads
    out the servers so that in most cases only a single server will time out." (§5.2)"""
    # init
    net = Network((1, 2, 3, 4, 5), **BASIC)
    for node_id in net.nodes:
        net.isolate(node_id)
    conflicts = 0
    rounds = 300

    for round_ in range(rounds):
        term = 10 + round_
        for node_id in net.nodes:
            net.step(Heartbeat(term=term, sender=1 if node_id != 1 else 2, to=node_id))
            net.process(node_id)
        # act: tick everyone together until someone times out
        timed_out: list[int] = []
        while not timed_out:
            for node_id, node in net.nodes.items():
                net.tick(node_id)
                if node.role != Role.FOLLOWER:
                    timed_out.append(node_id)
        net.process_all()
        if len(timed_out) > 1:
            conflicts += 1

    # check
    assert conflicts / rounds <= 0.3
