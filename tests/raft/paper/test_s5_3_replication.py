"""Raft paper §5.3: log replication."""

from __future__ import annotations

import pytest

from copycat.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Heartbeat,
    Role,
)

from ..harness import BASIC, Network, entry_data, make_log, of_type


def test_leader_appends_a_proposal_and_replicates_it() -> None:
    """ "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the
    entry." And: "When sending an AppendEntries RPC, the leader includes the index and
    term of the entry in its log that immediately precedes the new entries." (§5.3)"""
    # init
    net = Network((1, 2, 3), **BASIC)
    leader = net.elect(1)
    last = leader.last_index()
    net.sent.clear()

    # act
    net.raw(1).propose(b"x")
    net.process(1)

    # check: persisted first, in the leader's ready, then sent to each follower
    rd = leader.readies[-1]
    assert [(e.index, e.term, e.data) for e in rd.entries] == [(last + 1, leader.term, b"x")]
    assert leader.storage.last_index() == last + 1
    appends = of_type(net.sent, AppendEntries)
    assert sorted(m.to for m in appends) == [2, 3]
    for m in appends:
        assert (m.prev_index, m.prev_term) == (last, leader.term)
        assert [e.data for e in m.entries] == [b"x"]
        assert m.commit == last
    assert leader.commit == last


@pytest.mark.parametrize(
    ("size", "acceptors", "committed"),
    [
        (1, set(), True),
        (3, set(), False),
        (3, {2}, True),
        (3, {2, 3}, True),
        (5, set(), False),
        (5, {2}, False),
        (5, {2, 3}, True),
        (5, {2, 3, 4}, True),
        (5, {2, 3, 4, 5}, True),
    ],
)
def test_entry_commits_once_replicated_on_a_majority(
    size: int, acceptors: set[int], committed: bool
) -> None:
    """ "A log entry is committed once the leader that created the entry has replicated
    it on a majority of the servers." (§5.3)"""
    # init
    net = Network(range(1, size + 1), **BASIC)
    leader = net.elect(1)
    last = leader.last_index()

    # act: only the acceptors receive the append (and answer)
    for node_id in set(net.nodes) - acceptors - {1}:
        net.isolate(node_id)
    net.propose(1, b"x")

    # check
    assert (leader.commit > last) is committed
    assert (leader.data == [b"x"]) is committed


def test_leader_sends_its_commit_index_so_followers_apply() -> None:
    """ "The leader keeps track of the highest index it knows to be committed, and it
    includes that index in future AppendEntries RPCs (including heartbeats) so that the
    other servers eventually find out. Once a follower learns that a log entry is
    committed, it applies the entry to its state machine (in log order)." (§5.3)"""
    # init
    net = Network((1, 2, 3), **BASIC)
    leader = net.elect(1)
    # node 3 receives the entries but never hears of their commitment
    net.drop(lambda m: m.to == 3 and isinstance(m, AppendEntries | Heartbeat) and m.commit > 4)
    net.propose(1, b"a", b"b", b"c")
    assert net.data(1) == [b"a", b"b", b"c"]
    assert net[3].log_terms() == leader.log_terms()
    assert net.data(3) == []
    net.heal()
    net.sent.clear()

    # act: the next heartbeat carries the commit index
    net.tick(1)
    net.stabilize()

    # check
    beats = [m for m in of_type(net.sent, Heartbeat) if m.to == 3]
    assert beats
    assert beats[0].commit == leader.commit
    assert net[3].commit == leader.commit
    assert net.data(3) == [b"a", b"b", b"c"]
    assert [e.index for e in net[3].applied] == list(range(1, leader.commit + 1))


def test_committing_an_entry_commits_the_preceding_entries() -> None:
    """ "This also commits all preceding entries in the leader's log, including entries
    created by previous leaders." (§5.3)"""
    # init: node 1 holds two uncommitted entries of an earlier term (2)
    logs = {
        1: make_log((1, 2, 3), [2, 2], term=2),
        2: make_log((1, 2, 3), [], term=2),
        3: make_log((1, 2, 3), [], term=2),
    }
    net = Network((1, 2, 3), logs=logs, **BASIC)
    assert net[1].commit == 3

    # act
    leader = net.elect(1)

    # check: the new term's empty entry commits, and the term-2 entries with it
    assert leader.commit == 6
    assert leader.log_terms()[3:] == [2, 2, 3]
    for node_id in (1, 2, 3):
        assert net.data(node_id) == [entry_data(4, 2), entry_data(5, 2)]


def test_follower_applies_committed_entries_in_log_order() -> None:
    """ "Once a follower learns that a log entry is committed, it applies the entry to
    its state machine (in log order)." (§5.3)"""
    # init
    net = Network((1, 2, 3), **BASIC)
    net.step(AppendEntries(term=2, sender=2, to=1, prev_index=3, prev_term=1))
    net.process(1)
    net.take()
    entries = tuple(Entry(term=2, index=i, data=bytes([i])) for i in (4, 5, 6))

    # act
    net.step(AppendEntries(term=2, sender=2, to=1, prev_index=3, prev_term=1, entries=entries))
    net.step(AppendEntries(term=2, sender=2, to=1, prev_index=6, prev_term=2, commit=5))
    net.process(1)

    # check
    assert net[1].commit == 5
    assert net.data(1) == [bytes([4]), bytes([5])]
    assert [e.index for e in net[1].applied] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "accepted"),
    [
        (3, 1, True),  # matches the last bootstrap entry
        (5, 2, True),  # matches the last entry
        (4, 2, True),  # matches an earlier entry
        (5, 3, False),  # same index, other term
        (6, 2, False),  # past the end of the log
        (0, 0, True),  # the empty prefix always matches
    ],
)
def test_follower_checks_the_preceding_entry(
    prev_index: int, prev_term: int, accepted: bool
) -> None:
    """ "When sending an AppendEntries RPC, the leader includes the index and term of
    the entry in its log that immediately precedes the new entries. If the follower
    does not find an entry in its log with the same index and term, then it refuses the
    new entries." (§5.3)"""
    # init: follower log = bootstrap (1..3, term 1), then 4 and 5 at term 2
    net = Network((1, 2, 3), logs={1: make_log((1, 2, 3), [2, 2])}, **BASIC)
    before = net[1].log()

    # act
    net.step(AppendEntries(term=2, sender=2, to=1, prev_index=prev_index, prev_term=prev_term))
    net.process(1)

    # check
    [response] = of_type(net.take(), AppendEntriesResponse)
    assert response.reject is not accepted
    if accepted:
        assert response.index == max(prev_index, net[1].commit)
    else:
        assert response.index == prev_index
    assert net[1].log() == before


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "new_terms", "expected_terms"),
    [
        # new entries after the last one are appended
        (5, 2, [3, 3], [2, 2, 3, 3]),
        # a conflicting suffix is deleted and replaced
        (3, 1, [3], [3]),
        (4, 2, [3, 4], [2, 3, 4]),
        # entries already present are kept (nothing after them is deleted)
        (3, 1, [2], [2, 2]),
        (3, 1, [2, 2], [2, 2]),
    ],
)
def test_follower_deletes_conflicting_entries_and_appends_new_ones(
    prev_index: int, prev_term: int, new_terms: list[int], expected_terms: list[int]
) -> None:
    """ "If an existing entry conflicts with a new one (same index but different terms),
    delete the existing entry and all that follow it (§5.3). Append any new entries not
    already in the log." (Figure 2, AppendEntries RPC, receiver steps 3 and 4)"""
    # init: follower log = bootstrap (1..3), then 4 and 5 at term 2
    net = Network((1, 2, 3), logs={1: make_log((1, 2, 3), [2, 2])}, **BASIC)
    entries = tuple(
        Entry(term=t, index=prev_index + k, data=entry_data(prev_index + k, t))
        for k, t in enumerate(new_terms, start=1)
    )

    # act
    net.step(
        AppendEntries(
            term=4, sender=2, to=1, prev_index=prev_index, prev_term=prev_term, entries=entries
        )
    )
    net.process(1)

    # check
    assert net[1].log_terms()[3:] == expected_terms
    [response] = of_type(net.take(), AppendEntriesResponse)
    assert not response.reject
    assert response.index == prev_index + len(new_terms)


def test_leader_retries_until_every_follower_stores_every_entry() -> None:
    """ "If followers crash or run slowly, or if network packets are lost, the leader
    retries AppendEntries RPCs indefinitely (even after it has responded to the client)
    until all followers eventually store all log entries." (§5.3)"""
    # init: every append to node 3 is lost while entries commit on 1 and 2
    net = Network((1, 2, 3), **BASIC)
    leader = net.elect(1)
    net.drop(lambda m: m.to == 3 and isinstance(m, AppendEntries))
    net.propose(1, b"a", b"b")
    assert net.data(1) == [b"a", b"b"]
    assert net[3].last_index() < leader.last_index()

    # act: the link recovers; only heartbeats go on
    net.heal()
    net.tick_all(3)

    # check
    assert net[3].log() == leader.log()
    assert net.data(3) == [b"a", b"b"]


def test_rejection_hint_skips_a_whole_conflicting_term() -> None:
    """ "If desired, the protocol can be optimized to reduce the number of rejected
    AppendEntries RPCs. For example, when rejecting an AppendEntries request, the
    follower can include the term of the conflicting entry and the first index it
    stores for that term. With this information, the leader can decrement nextIndex to
    bypass all of the conflicting entries in that term." (§5.3)"""
    # init: node 3 holds 30 uncommitted entries of term 2 that no one else has
    logs = {
        1: make_log((1, 2, 3), [3], term=3),
        2: make_log((1, 2, 3), [3], term=3),
        3: make_log((1, 2, 3), [2] * 30, term=3),
    }
    net = Network((1, 2, 3), logs=logs, **BASIC)

    # act
    leader = net.elect(1)

    # check: one or two rejections, not thirty
    rejections = [m for m in of_type(net.sent, AppendEntriesResponse) if m.sender == 3 and m.reject]
    assert 1 <= len(rejections) <= 2
    assert net[3].log() == leader.log()


def test_logs_match_after_replication() -> None:
    """Log Matching: "If two entries in different logs have the same index and term,
    then they store the same command and the logs are identical in all preceding
    entries." (§5.3, Figure 3)"""
    # init
    net = Network((1, 2, 3, 4, 5), **BASIC)
    net.elect(1)
    net.isolate(5)
    net.propose(1, b"a", b"b")
    net.heal()
    net.isolate(1)
    net.elect(2)
    net.propose(2, b"c")
    net.heal()

    # act
    net.tick_all(3)

    # check
    logs = {i: n.log() for i, n in net.nodes.items()}
    reference = logs[2]
    for node_id, log in logs.items():
        assert log == reference, node_id
    assert net.leaders() == [2]
    assert all(net.data(i) == [b"a", b"b", b"c"] for i in net.nodes)
    assert net[1].role == Role.FOLLOWER
