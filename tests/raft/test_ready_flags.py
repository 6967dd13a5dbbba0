"""The two optional shortcuts a `Ready` offers its host: `send_before_persist` (a
leader's messages may leave while it writes its log, thesis §10.2.1) and
`commit_only` (the only change to persist is a higher commit index, which raft does not
need durable)."""

from __future__ import annotations

from copycat.raft import AppendEntries, DeliberateBugs, Role

from .harness import Network


def test_a_leaders_appends_may_leave_before_its_write() -> None:
    net = Network((1, 2, 3))
    net.elect(1)
    leader = net[1]
    leader.readies.clear()

    net.raw(1).propose(b"x")
    net.process(1)

    rd = leader.readies[-1]
    assert rd.entries
    assert any(isinstance(m, AppendEntries) for m in rd.messages)
    assert rd.send_before_persist
    assert not rd.commit_only


def test_a_new_term_or_vote_must_be_persisted_before_anything_is_sent() -> None:
    net = Network((1, 2, 3))
    net.elect(1)
    # every ready that changed the term or the vote (campaigns, votes, the new leader's
    # first ready) kept its messages until after the write
    for node in net.nodes.values():
        prev_term_vote = (0, 0)
        for rd in node.readies:
            if rd.hard_state is None:
                continue
            term_vote = (rd.hard_state.term, rd.hard_state.vote)
            if term_vote != prev_term_vote:
                assert not rd.send_before_persist
                assert not rd.commit_only
            prev_term_vote = term_vote


def test_followers_never_send_before_their_write() -> None:
    net = Network((1, 2, 3))
    net.elect(1)
    net.propose(1, b"a", b"b")
    for node_id in (2, 3):
        assert net[node_id].role == Role.FOLLOWER
        assert not any(rd.send_before_persist for rd in net[node_id].readies)


def test_a_commit_index_alone_is_flagged_commit_only() -> None:
    net = Network((1, 2, 3))
    net.elect(1)
    for node in net.nodes.values():
        node.readies.clear()

    net.propose(1, b"a")

    for node in net.nodes.values():
        commit_only = [rd for rd in node.readies if rd.commit_only]
        assert commit_only, f"node {node.id} learned the commit with its entries"
        for rd in commit_only:
            assert rd.hard_state is not None
            assert not rd.entries
            assert rd.snapshot is None
        flagged = {rd.hard_state.commit for rd in commit_only if rd.hard_state is not None}
        assert node.commit in flagged


def test_a_lone_leader_sends_its_commit_only_after_its_write() -> None:
    """A leader that alone is a quorum (one voter plus learners) commits its entries as
    it appends them; messages telling of that commit must wait for its write, or a
    crash before the write loses an entry a learner has applied (thesis §10.2.1)."""
    net = Network((1,), learners=(2, 3))
    net.elect(1)
    leader = net[1]
    leader.readies.clear()

    net.raw(1).propose(b"x")
    net.process(1)

    rd = leader.readies[-1]
    assert rd.entries
    assert rd.hard_state is not None
    assert rd.hard_state.commit >= rd.entries[0].index
    appends = [m for m in rd.messages if isinstance(m, AppendEntries)]
    assert appends
    assert any(m.commit >= rd.entries[0].index for m in appends)
    assert not rd.send_before_persist


def test_the_deliberate_bug_lets_a_lone_leader_send_its_commit_early() -> None:
    net = Network((1,), learners=(2, 3), bugs=DeliberateBugs(early_send_lone_leader=True))
    net.elect(1)
    leader = net[1]
    leader.readies.clear()

    net.raw(1).propose(b"x")
    net.process(1)

    assert leader.readies[-1].send_before_persist
