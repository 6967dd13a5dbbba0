"""Raft paper §5.4: safety. The election restriction (§5.4.1), committing entries
from previous terms (§5.4.2, Figure 8), and how a leader brings followers' logs into
line with its own (§5.3, Figure 7)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from copycat.raft import (
    AppendEntries,
    AppendEntriesResponse,
    DeliberateBugs,
    Message,
    RequestVote,
    RequestVoteResponse,
    Role,
)

from ..harness import BASIC, Intercept, Network, entry_data, make_log, of_type

# -- §5.4.1 election restriction ---------------------------------------------------------


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        # the voter's log ends at (5, term 2)
        (5, 2, True),  # same last term and length
        (6, 2, True),  # same last term, longer
        (4, 2, False),  # same last term, shorter
        (3, 3, True),  # later last term, however short
        (9, 1, False),  # earlier last term, however long
        (5, 1, False),
    ],
)
def test_voter_denies_a_candidate_whose_log_is_less_up_to_date(
    last_index: int, last_term: int, granted: bool
) -> None:
    """ "Raft determines which of two logs is more up-to-date by comparing the index and
    term of the last entries in the logs. If the logs have last entries with different
    terms, then the log with the later term is more up-to-date. If the logs end with
    the same term, then whichever log is longer is more up-to-date." And: "the voter
    denies its vote if its own log is more up-to-date than that of the candidate."
    (§5.4.1)"""
    # init
    net = Network((1, 2, 3), logs={1: make_log((1, 2, 3), [2, 2])}, **BASIC)

    # act
    net.step(
        RequestVote(term=4, sender=2, to=1, last_log_index=last_index, last_log_term=last_term)
    )
    net.process(1)

    # check
    [response] = of_type(net.take(), RequestVoteResponse)
    assert response.reject is not granted
    assert net[1].storage.hard_state.vote == (2 if granted else 0)
    assert net[1].term == 4


def test_a_node_missing_committed_entries_cannot_become_leader() -> None:
    """ "Raft uses the voting process to prevent a candidate from winning an election
    unless its log contains all committed entries." (§5.4.1, Leader Completeness)"""
    # init: node 3 misses an entry committed by 1 and 2
    net = Network((1, 2, 3), **BASIC)
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"committed")
    assert net.data(1) == [b"committed"]
    net.heal()
    net.isolate(1)  # the leader crashes

    # act
    net.campaign(3)

    # check
    assert net[3].role != Role.LEADER
    assert net.leaders() == [1]  # the isolated old leader only
    net.campaign(2)
    assert net[2].role == Role.LEADER
    net.heal()
    net.tick_all(2)
    assert all(n.data == [b"committed"] for n in net.nodes.values())


# -- §5.4.2 and Figure 8 -----------------------------------------------------------------


def test_leader_does_not_commit_a_previous_term_entry_by_counting_replicas() -> None:
    """ "Raft never commits log entries from previous terms by counting replicas. Only
    log entries from the leader's current term are committed by counting replicas;
    once an entry from the current term has been committed in this way, then all prior
    entries are committed indirectly because of the Log Matching Property." (§5.4.2)"""
    # init: node 1 holds entries 4 and 5 of term 2, uncommitted; it leads term 3
    logs = {
        1: make_log((1, 2, 3), [2, 2], term=2),
        2: make_log((1, 2, 3), [], term=2),
        3: make_log((1, 2, 3), [], term=2),
    }
    net = Network((1, 2, 3), logs=logs, **BASIC)
    net.raw(1).campaign()
    net.process(1)
    net.deliver()  # votes requested
    net.process_all()
    net.deliver()  # votes granted; node 1 leads term 3 and appends its empty entry 6
    assert net[1].role == Role.LEADER
    net.process(1)
    appends = net.take()
    assert {m.to for m in of_type(appends, AppendEntries)} == {2, 3}

    # act 1: node 2 acknowledges entries 4 and 5 only: a majority holds them
    net.step(AppendEntriesResponse(term=3, sender=2, to=1, index=5))
    net.process(1)

    # check 1
    assert net[1].commit == 3
    assert net.data(1) == []

    # act 2: node 2 acknowledges the term-3 entry
    net.take()
    net.step(AppendEntriesResponse(term=3, sender=2, to=1, index=6))
    net.process(1)

    # check 2: everything up to it commits at once
    assert net[1].commit == 6
    assert net.data(1) == [entry_data(4, 2), entry_data(5, 2)]


def _strip_entries_of_term(term: int) -> Intercept:
    def rewrite(m: Message) -> Message:
        if isinstance(m, AppendEntries) and any(e.term >= term for e in m.entries):
            return replace(m, entries=tuple(e for e in m.entries if e.term < term))
        return m

    return rewrite


def _figure_8_up_to_c(net: Network) -> None:
    """Figure 8 (a)-(c) with five servers S1..S5 (indexes shifted by the five
    bootstrap entries and the first leader's empty entry, so the figure's index 2 is
    index 7 here)."""
    # (a) S1 leads term 2 and replicates entry 7 ("x") to S2 only.
    net.elect(1)
    assert net[1].term == 2
    for node_id in (3, 4, 5):
        net.isolate(node_id)
    net.propose(1, b"x")
    assert [n.log_terms()[6:] for n in net.nodes.values()] == [[2], [2], [], [], []]

    # (b) S1 crashes; S5 is elected for term 3 by S3, S4 and itself, and appends a
    # different entry 7, then crashes before replicating it.
    net.restart(1)
    net.heal()
    net.isolate(1)
    net.drop(lambda m: m.sender == 5 and isinstance(m, AppendEntries))
    net.elect(5)
    assert net[5].term == 3
    assert net[5].log_terms()[6:] == [3]
    net.restart(5)

    # (c) S1 restarts and is elected for term 4 (its first try, in term 3, fails: S3
    # and S4 already voted). It replicates entry 7 of term 2 to S2, S3 and S4, but
    # not yet its own term-4 entry 8.
    net.heal()
    net.isolate(5)
    net.intercept(_strip_entries_of_term(4))
    net.campaign(1)
    assert net[1].role != Role.LEADER
    net.elect(1)
    assert net[1].term == 4


def test_figure_8_previous_term_entry_on_a_majority_is_not_committed() -> None:
    """Figure 8 (c)-(d): "S1 restarts, is elected leader, and continues replication.
    At this point, the log entry from term 2 has been replicated on a majority of the
    servers, but it is not committed. If S1 crashes as in (d), S5 could be elected
    leader (with votes from S2, S3, and S4) and overwrite the entry with its own entry
    from term 3." (§5.4.2)"""
    # init / act: (a)-(c)
    net = Network((1, 2, 3, 4, 5), **BASIC)
    _figure_8_up_to_c(net)

    # check (c): entry 7 (term 2) is on S1..S4, a majority, yet not committed
    for node_id in (1, 2, 3, 4):
        assert net[node_id].log_terms()[6] == 2
    assert net[1].log_terms()[6:] == [2, 4]
    assert net[1].commit == 6
    assert all(b"x" not in n.data for n in net.nodes.values())

    # act (d): S1 crashes; S5 restarts and is elected for term 5 by S2, S3 and S4
    net.restart(1)
    net.heal()
    net.isolate(1)
    net.campaign(5)  # term 4: S2..S4 already voted for S1
    assert net[5].role != Role.LEADER
    net.elect(5)

    # check (d): entry 7 of term 2 is overwritten everywhere S5 reaches; "x" was never
    # applied by anyone
    assert net[5].term == 5
    for node_id in (2, 3, 4, 5):
        assert net[node_id].log_terms()[6:] == [3, 5]
        assert net[node_id].commit == 8
    assert all(b"x" not in n.data for n in net.nodes.values())


def test_figure_8_current_term_entry_on_a_majority_commits_the_earlier_ones() -> None:
    """Figure 8 (e): "if S1 replicates an entry from its current term on a majority of
    the servers before crashing, as in (e), then this entry is committed (S5 cannot win
    an election). At this point all preceding entries in the log are committed as
    well." (§5.4.2)"""
    # init: (a)-(c)
    net = Network((1, 2, 3, 4, 5), **BASIC)
    _figure_8_up_to_c(net)
    assert net[1].commit == 6

    # act (e): the term-4 entry reaches S2 and S3 too
    net.heal()
    net.isolate(5)
    net.isolate(4)
    net.tick_all(2, nodes=(1, 2, 3))

    # check (e)
    assert net[1].commit == 8
    assert b"x" in net.data(1)
    net.restart(1)
    net.heal()
    net.isolate(1)
    net.campaign(5)
    net.campaign(5)
    assert net[5].role != Role.LEADER
    for node_id in (2, 3):
        assert net[node_id].log_terms()[6:] == [2, 4]


# -- Figure 7: the leader brings followers into line ------------------------------------

LEADER_TERMS = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
"""Figure 7's leader for term 8 (index 1 of the figure is index 8 here, after seven
bootstrap entries)."""

FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_figure_7_leader_brings_a_follower_log_into_line(case: str) -> None:
    """Figure 7: "When the leader at the top comes to power, it is possible that any of
    scenarios (a-f) could occur in follower logs. ... A follower may be missing entries
    (a-b), may have extra uncommitted entries (c-d), or both (e-f)." And: "the leader
    handles inconsistencies by forcing the followers' logs to duplicate its own. This
    means that conflicting entries in follower logs will be overwritten with entries
    from the leader's log." (§5.3)"""
    # init: 7 members; node 1 has the leader's log, node 2 the follower's, and the
    # others the leader's log too (so that node 1 wins term 8 whatever node 2 does)
    voters = range(1, 8)
    logs = {i: make_log(voters, LEADER_TERMS, term=7) for i in voters}
    logs[2] = make_log(voters, FIGURE_7_FOLLOWERS[case], term=7)
    net = Network(voters, logs=logs, **BASIC)

    # act
    leader = net.elect(1)

    # check: node 2's log is now the leader's: its entries plus term 8's empty entry
    assert leader.term == 8
    assert leader.log_terms()[7:] == [*LEADER_TERMS, 8]
    assert net[2].log() == leader.log()
    assert net[2].commit == leader.commit == leader.last_index()
    expected = [entry_data(i, t) for i, t in enumerate(LEADER_TERMS, start=8)]
    assert net.data(2) == expected


def test_committed_entries_are_never_truncated_by_a_stale_append() -> None:
    """State Machine Safety: "if a server has applied a log entry at a given index to
    its state machine, no other server will ever apply a different log entry for the
    same index." (§5.4.3) A delayed append whose prev index is below the follower's
    commit index cannot remove committed entries."""
    # init
    net = Network((1, 2, 3), **BASIC)
    net.elect(1)
    net.propose(1, b"a", b"b")
    before = net[2].log()
    commit = net[2].commit

    # act: an old (duplicated, delayed) append from the same leader and term
    net.step(
        AppendEntries(
            term=net[1].term,
            sender=1,
            to=2,
            prev_index=3,
            prev_term=1,
            entries=(),
            commit=3,
        )
    )
    net.process(2)

    # check
    assert net[2].log() == before
    assert net[2].commit == commit
    [response] = of_type(net.take(), AppendEntriesResponse)
    assert not response.reject
    assert response.index == commit


def test_every_node_applies_the_same_sequence_across_leader_changes() -> None:
    """State Machine Safety: "if a server has applied a log entry at a given index to
    its state machine, no other server will ever apply a different log entry for the
    same index." (§5.4.3, Figure 3)"""
    # init
    net = Network((1, 2, 3, 4, 5), **BASIC)

    # act: three leaders in turn, each partitioned away after some proposals, some
    # of which never commit
    for leader_id, minority in ((1, (1, 2)), (3, (3, 4)), (5, (5, 1))):
        net.heal()
        net.elect(leader_id)
        net.propose(leader_id, f"c{leader_id}".encode())
        for node_id in set(net.nodes) - set(minority):
            net.isolate(node_id)
        net.propose(leader_id, f"lost{leader_id}".encode())
        net.restart(leader_id)
    net.heal()
    net.elect(2)
    net.tick_all(2)

    # check
    sequences = {i: n.data for i, n in net.nodes.items()}
    assert sequences[2] == [b"c1", b"c3", b"c5"]
    assert all(seq == sequences[2] for seq in sequences.values())


def test_figure_8_check_fails_when_the_leader_counts_old_replicas() -> None:
    """The Figure 8 checks above can fail: with the deliberate bug
    `commit_previous_term` the leader of (c) commits entry 7 of term 2 by counting
    replicas, and in (d) S5 overwrites an entry that S1 already applied -- exactly the
    State Machine Safety violation §5.4.2 warns of."""
    # init / act: (a)-(c) with the bug
    net = Network((1, 2, 3, 4, 5), bugs=DeliberateBugs(commit_previous_term=True), **BASIC)
    _figure_8_up_to_c(net)

    # check (c): committed by counting replicas
    assert net[1].commit == 7
    assert net.data(1) == [b"x"]

    # act (d): S5 campaigns for term 5 (votes only: what follows would livelock, as
    # S2..S4 hold a "committed" entry the new leader lacks)
    net.restart(1)
    net.heal()
    net.isolate(1)
    net.campaign(5)
    net.raw(5).campaign()
    for _ in range(2):
        net.process_all()
        net.deliver(lambda m: isinstance(m, RequestVote | RequestVoteResponse))

    # check (d): a leader whose log lacks the entry S1 applied at index 7
    assert net[5].role == Role.LEADER
    assert net[5].log_terms()[6] == 3
    assert net[1].storage.entries(7, 8)[0].data == b"x"
