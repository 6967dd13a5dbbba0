"""Raft paper §6 and thesis chapter 4: cluster membership changes. Single-server
changes (thesis §4.1), joint consensus (§4.3, the paper's §6), the leader's removal
(§4.2.2), learners, i.e. non-voting members that catch up (§4.2.1), and the safety
rules the leader enforces before it accepts a change."""

from __future__ import annotations

from dataclasses import replace

import pytest

from copycat.errors import ConfChangeError
from copycat.raft import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    EntryKind,
    Message,
    RequestVote,
    RequestVoteResponse,
    Role,
    add_learner,
    add_voter,
    remove_node,
)

from ..harness import Network, of_type


def _change(
    *steps: tuple[ConfChangeType, int],
    transition: ConfChangeTransition = ConfChangeTransition.AUTO,
) -> ConfChange:
    return ConfChange(
        changes=tuple(ConfChangeSingle(type=t, node_id=n) for t, n in steps),
        transition=transition,
    )


ADD, LEARN, REMOVE = (
    ConfChangeType.ADD_VOTER,
    ConfChangeType.ADD_LEARNER,
    ConfChangeType.REMOVE_NODE,
)


def _conf_change_entries(net: Network, node_id: int) -> list[ConfChange]:
    """The membership changes in `node_id`'s log after the bootstrap ones."""
    return [
        ConfChange.decode(e.data)
        for e in net[node_id].log()
        if e.kind == EntryKind.CONF_CHANGE and e.term > 1
    ]


def _assert_no_voter_is_a_learner(states: list[ConfState]) -> None:
    for cs in states:
        assert not cs.learners & (cs.voters | cs.voters_outgoing), cs
        assert cs.learners_next <= cs.voters_outgoing, cs


# -- single-server changes ---------------------------------------------------------------


def test_adding_one_voter() -> None:
    """ "Raft restricts the types of changes that are allowed: only one server can be
    added or removed from the cluster at a time." (thesis §4.1) The new member receives
    the whole log, then counts in the quorum: four voters need three acknowledgements."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.propose(1, b"before")
    net.add_node(4)

    # act
    net.raw(1).propose_conf_change(add_voter(4))
    net.stabilize()

    # check: everyone, the newcomer included, runs with four voters
    for node in net.nodes.values():
        assert node.raw.conf_state() == ConfState(voters=frozenset({1, 2, 3, 4}))
    assert net[4].log() == net[1].log()
    assert net.data(4) == [b"before"]
    net.isolate(2)
    net.isolate(3)
    net.propose(1, b"two of four")
    assert net.data(1) == [b"before"]
    net.heal()
    net.isolate(3)
    net.tick_all(1)
    assert net.data(1) == [b"before", b"two of four"]


def test_removing_one_voter() -> None:
    """ "When adding or removing a single server from a cluster, any majority of the old
    cluster overlaps with any majority of the new cluster." (thesis §4.1) After node 3
    is removed, two voters remain and both are needed to commit."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)

    # act
    net.raw(1).propose_conf_change(remove_node(3))
    net.stabilize()

    # check
    for node_id in (1, 2):
        assert net[node_id].raw.conf_state() == ConfState(voters=frozenset({1, 2}))
    net.isolate(3)
    net.propose(1, b"a")
    assert net.data(1) == [b"a"]
    net.isolate(2)
    net.propose(1, b"b")
    assert net.data(1) == [b"a"]


def test_only_one_change_may_be_pending() -> None:
    """ "The leader ... will not begin a new configuration change until the previous one
    has been committed" (thesis §4.1, the safety condition of single-server changes);
    etcd's rule, kept here, is stricter: until it has been applied. The second change
    is refused with `ConfChangeError` and nothing is appended for it."""
    # init
    net = Network((1, 2, 3))
    leader = net.elect(1)
    net.add_node(4)
    net.add_node(5)
    net.raw(1).propose_conf_change(add_voter(4))
    last = net.raw(1).last_index()

    # act / check: refused while the first is pending
    with pytest.raises(ConfChangeError, match="one change at a time"):
        net.raw(1).propose_conf_change(add_voter(5))
    assert net.raw(1).last_index() == last

    # act / check: accepted once the first is applied
    net.stabilize()
    net.raw(1).propose_conf_change(add_voter(5))
    net.stabilize()
    assert leader.raw.conf_state().voters == {1, 2, 3, 4, 5}
    assert [c.changes[0].node_id for c in _conf_change_entries(net, 1)] == [4, 5]


def test_normal_proposals_are_not_held_back_by_a_pending_change() -> None:
    """ "The leader ... will not begin a new configuration change until the previous one
    has been committed" (thesis §4.1): the rule concerns configuration changes only;
    normal entries go on being accepted meanwhile."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.add_node(4)
    net.raw(1).propose_conf_change(add_voter(4))

    # act
    net.raw(1).propose(b"x")
    net.stabilize()

    # check
    assert net.data(1) == [b"x"]
    assert net.data(4) == [b"x"]


def test_a_change_that_would_leave_no_voter_is_refused() -> None:
    """A configuration needs voters to elect and commit anything (thesis §4.1); the
    leader refuses to remove the last one."""
    # init
    net = Network((1,))
    net.elect(1)

    # act / check
    with pytest.raises(ConfChangeError, match="no voters"):
        net.raw(1).propose_conf_change(remove_node(1))
    assert net[1].raw.conf_state().voters == {1}


def test_removed_leader_steps_down() -> None:
    """ "a leader that is removed from the configuration steps down once the C_new entry
    is committed" (thesis §4.2.2); the remaining servers then elect a leader among
    themselves."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)

    # act
    net.raw(1).propose_conf_change(remove_node(1))
    net.stabilize()

    # check: node 1 stepped down once it applied its removal, and never campaigns
    assert net[1].role == Role.FOLLOWER
    assert net[2].raw.conf_state().voters == {2, 3}
    assert net[3].raw.conf_state().voters == {2, 3}
    net.sent.clear()
    net.tick_all(40)
    [leader] = net.leaders()
    assert leader in (2, 3)
    assert not [m for m in of_type(net.sent, RequestVote) if m.sender == 1]
    net.propose(leader, b"after")
    assert net.data(2) == net.data(3) == [b"after"]


# -- joint consensus -----------------------------------------------------------------------


def test_joint_consensus_is_entered_and_left_automatically() -> None:
    """ "the cluster first switches to a transitional configuration we call joint
    consensus; once the joint consensus has been committed, the system then transitions
    to the new configuration." (paper §6) With an implicit transition the leader
    proposes the change that leaves the joint configuration by itself."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.add_node(4)
    net.add_node(5)

    # act
    net.raw(1).propose_conf_change(_change((ADD, 4), (ADD, 5)))
    net.stabilize()

    # check: the leader went through C_old,new, then C_new; every member ends in C_new
    joint = ConfState(
        voters=frozenset({1, 2, 3, 4, 5}),
        voters_outgoing=frozenset({1, 2, 3}),
        auto_leave=True,
    )
    final = ConfState(voters=frozenset({1, 2, 3, 4, 5}))
    assert net[1].conf_states[-2:] == [joint, final]
    for node in net.nodes.values():
        assert node.raw.conf_state() == final
    changes = _conf_change_entries(net, 1)
    assert len(changes) == 2
    assert changes[1].leaves_joint()


def test_joint_consensus_needs_both_majorities() -> None:
    """ "Agreement (for elections and entry commitment) requires separate majorities
    from both the old and new configurations." (paper §6)"""
    # init: explicit joint configuration from {1,2,3} to {1,4,5}
    net = Network((1, 2, 3))
    net.elect(1)
    net.add_node(4)
    net.add_node(5)
    net.raw(1).propose_conf_change(
        _change(
            (ADD, 4),
            (ADD, 5),
            (REMOVE, 2),
            (REMOVE, 3),
            transition=ConfChangeTransition.JOINT_EXPLICIT,
        )
    )
    net.stabilize()
    cs = net[1].raw.conf_state()
    assert cs.voters == {1, 4, 5}
    assert cs.voters_outgoing == {1, 2, 3}

    # act / check: the old majority alone does not commit
    net.isolate(4)
    net.isolate(5)
    net.propose(1, b"old only")
    assert net.data(1) == []

    # act / check: the new majority alone does not commit either ("old only" now
    # reaches 4 and 5 as well, so both majorities hold it and it commits)
    net.heal()
    net.isolate(2)
    net.isolate(3)
    net.propose(1, b"new only")
    assert net.data(1) == [b"old only"]

    # act / check: both majorities (1 and 2 of the old; 1 and 4 of the new) commit
    net.heal()
    net.isolate(3)
    net.isolate(5)
    net.tick_all(1)
    assert net.data(1) == [b"old only", b"new only"]


def test_explicit_joint_configuration_is_left_by_an_empty_change() -> None:
    """ "Once the joint consensus has been committed, the system then transitions to the
    new configuration." (paper §6) With JOINT_EXPLICIT the group stays in the joint
    configuration until an empty change is proposed; other changes are refused
    meanwhile, and leaving is refused outside a joint configuration."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.add_node(4)
    net.raw(1).propose_conf_change(
        _change((ADD, 4), (REMOVE, 3), transition=ConfChangeTransition.JOINT_EXPLICIT)
    )
    net.stabilize()
    net.tick_all(3)
    assert net[1].raw.conf_state().is_joint()

    # act / check: another change is refused in the joint configuration
    with pytest.raises(ConfChangeError, match="joint"):
        net.raw(1).propose_conf_change(add_voter(5))

    # act: leave
    net.raw(1).propose_conf_change(ConfChange())
    net.stabilize()

    # check
    for node_id in (1, 2, 4):
        assert net[node_id].raw.conf_state() == ConfState(voters=frozenset({1, 2, 4}))
    with pytest.raises(ConfChangeError, match="joint"):
        net.raw(1).propose_conf_change(ConfChange())
    net.isolate(3)
    net.isolate(2)
    net.propose(1, b"with 4")
    assert net.data(1) == [b"with 4"]


# -- learners ------------------------------------------------------------------------------


def test_learners_receive_the_log_but_do_not_vote() -> None:
    """ "Raft introduces an additional phase before the configuration change, in which a
    new server joins the cluster as a non-voting member. The leader replicates log
    entries to it, but it is not yet counted towards majorities for voting or
    commitment purposes." (thesis §4.2.1)"""
    # init
    net = Network((1, 2, 3), learners=(4, 5))
    net.sent.clear()

    # act: an election and a proposal
    net.elect(1)
    net.propose(1, b"x")

    # check: no vote was asked of a learner; they still hold and apply the log
    assert {m.to for m in of_type(net.sent, RequestVote)} == {2, 3}
    for learner in (4, 5):
        assert net[learner].log() == net[1].log()
        assert net.data(learner) == [b"x"]


def test_learner_votes_are_not_counted() -> None:
    """ "it is not yet counted towards majorities for voting or commitment purposes"
    (thesis §4.2.1): two granted votes from learners do not elect a candidate of a
    three-voter group."""
    # init
    net = Network((1, 2, 3), learners=(4, 5))
    net.raw(1).campaign()
    net.process(1)
    net.take()
    term = net[1].raw.term + (1 if net[1].role == Role.PRE_CANDIDATE else 0)
    role = net[1].role

    # act
    for learner in (4, 5):
        net.step(
            RequestVoteResponse(
                term=term,
                sender=learner,
                to=1,
                reject=False,
                pre_vote=role == Role.PRE_CANDIDATE,
            )
        )

    # check
    assert net[1].role == role
    assert net[1].role != Role.LEADER


def test_learners_are_not_counted_for_commitment() -> None:
    """ "it is not yet counted towards majorities for voting or commitment purposes"
    (thesis §4.2.1): with both other voters away, the leader and two learners hold an
    entry -- three of five members -- and it does not commit."""
    # init
    net = Network((1, 2, 3), learners=(4, 5))
    net.elect(1)

    # act
    net.isolate(2)
    net.isolate(3)
    net.propose(1, b"x")

    # check
    assert net[4].log()[-1].data == b"x"
    assert net[5].log()[-1].data == b"x"
    assert net.data(1) == []
    assert net[1].commit < net[1].last_index()


def test_learner_never_campaigns() -> None:
    """A non-voting member "is not yet counted towards majorities for voting" (thesis
    §4.2.1); it must not disturb the group with elections of its own either."""
    # init
    net = Network((1, 2, 3), learners=(4,))
    net.isolate(4)
    term = net[4].term

    # act: many election timeouts without a leader
    net.tick(4, 100)
    net.process(4)

    # check
    assert net[4].role == Role.FOLLOWER
    assert net[4].term == term
    assert not [m for m in net.sent if m.sender == 4]


def test_new_server_catches_up_as_learner_then_is_promoted() -> None:
    """ "The leader replicates log entries to it, but it is not yet counted towards
    majorities ... Once the new server has caught up with the rest of the cluster, the
    reconfiguration can proceed as described above." (thesis §4.2.1)"""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.propose(1, *(bytes([i]) for i in range(20)))
    net.add_node(4)

    # act: join as a learner, catch up, then become a voter
    net.raw(1).propose_conf_change(add_learner(4))
    net.stabilize()
    assert net[4].raw.conf_state().learners == {4}
    assert net.data(4) == net.data(1)
    net.raw(1).propose_conf_change(add_voter(4))
    net.stabilize()

    # check
    for node in net.nodes.values():
        assert node.raw.conf_state() == ConfState(voters=frozenset({1, 2, 3, 4}))
    _assert_no_voter_is_a_learner([cs for n in net.nodes.values() for cs in n.conf_states])


def test_a_node_is_never_a_voter_and_a_learner_at_once() -> None:
    """A learner is "not yet counted towards majorities" (thesis §4.2.1), so no member
    may be both. Demoting a voter outside a joint configuration moves it at once;
    demoting one of the outgoing voters inside a joint configuration keeps it a voter
    of C_old (in `learners_next`) until the joint configuration is left."""
    # init
    net = Network((1, 2, 3, 4))
    net.elect(1)

    # act: a simple demotion, then a joint one that also adds node 5
    net.raw(1).propose_conf_change(add_learner(4))
    net.stabilize()
    assert net[1].raw.conf_state() == ConfState(
        voters=frozenset({1, 2, 3}), learners=frozenset({4})
    )
    net.add_node(5)
    net.raw(1).propose_conf_change(
        _change((LEARN, 3), (ADD, 5), transition=ConfChangeTransition.JOINT_EXPLICIT)
    )
    net.stabilize()
    joint = net[1].raw.conf_state()
    net.raw(1).propose_conf_change(ConfChange())
    net.stabilize()

    # check
    assert joint == ConfState(
        voters=frozenset({1, 2, 5}),
        voters_outgoing=frozenset({1, 2, 3}),
        learners=frozenset({4}),
        learners_next=frozenset({3}),
    )
    final = ConfState(voters=frozenset({1, 2, 5}), learners=frozenset({3, 4}))
    for node in net.nodes.values():
        assert node.raw.conf_state() == final
        _assert_no_voter_is_a_learner(node.conf_states)


def test_demoted_voter_still_votes_in_the_old_half_of_a_joint_configuration() -> None:
    """ "Agreement (for elections and entry commitment) requires separate majorities
    from both the old and new configurations." (paper §6) A voter being demoted to
    learner still counts in C_old until the joint configuration is left."""
    # init: joint {1,2,5} / {1,2,3}, with 3 being demoted
    net = Network((1, 2, 3))
    net.elect(1)
    net.add_node(5)
    net.raw(1).propose_conf_change(
        _change((LEARN, 3), (ADD, 5), transition=ConfChangeTransition.JOINT_EXPLICIT)
    )
    net.stabilize()

    # act: with 2 away, 1 and 5 form a majority of C_new, and 1 and 3 of C_old
    net.isolate(2)
    net.propose(1, b"x")

    # check
    assert net.data(1) == [b"x"]
    net.isolate(3)
    net.propose(1, b"y")
    assert net.data(1) == [b"x"]


def test_new_leader_leaves_an_auto_leave_joint_configuration() -> None:
    """ "once the joint consensus has been committed, the system then transitions to the
    new configuration" (paper §6) even if the leader that entered it fails first: a
    new leader of an auto-leave joint configuration proposes the leaving change."""
    # init: node 1 enters the joint configuration, but its leaving change never
    # leaves node 1, which then crashes
    net = Network((1, 2, 3), pre_vote=False, check_quorum=False)
    net.elect(1)
    net.add_node(4)
    net.add_node(5)

    def withhold_leave(m: Message) -> Message:
        if not isinstance(m, AppendEntries):
            return m
        for position, e in enumerate(m.entries):
            if e.kind == EntryKind.CONF_CHANGE and ConfChange.decode(e.data).leaves_joint():
                return replace(m, entries=m.entries[:position])
        return m

    net.intercept(withhold_leave)
    net.raw(1).propose_conf_change(_change((ADD, 4), (ADD, 5)))
    net.stabilize()
    net.tick_all(2)
    assert all(net[i].raw.conf_state().is_joint() for i in (2, 3, 4, 5))
    net.restart(1)
    net.heal()
    net.isolate(1)

    # act
    net.elect(2)

    # check
    final = ConfState(voters=frozenset({1, 2, 3, 4, 5}))
    for node_id in (2, 3, 4, 5):
        assert net[node_id].raw.conf_state() == final


def test_new_leader_accepts_no_change_before_applying_its_log() -> None:
    """ "The leader ... will not begin a new configuration change until the previous one
    has been committed" (thesis §4.1). A new leader may hold an uncommitted change from
    an earlier term in its log; it refuses new changes until everything in its log up
    to its election is applied."""
    # init: node 1's change "add 4" reaches nodes 2 and 3 but never commits
    net = Network((1, 2, 3), pre_vote=False, check_quorum=False)
    net.elect(1)
    net.add_node(4)
    net.add_node(5)
    net.drop(lambda m: m.to == 1 and isinstance(m, AppendEntriesResponse))
    net.raw(1).propose_conf_change(add_voter(4))
    net.stabilize()
    assert _conf_change_entries(net, 2)
    net.restart(1)
    net.heal()
    net.isolate(1)
    net.drop(lambda m: m.sender == 2 and isinstance(m, AppendEntries))
    net.elect(2)

    # act / check: refused while the earlier change is not applied
    with pytest.raises(ConfChangeError, match="one change at a time"):
        net.raw(2).propose_conf_change(add_voter(5))

    # act / check: accepted once the log is committed and applied
    net.heal()
    net.isolate(1)
    net.tick_all(1)
    assert net[2].raw.conf_state().voters == {1, 2, 3, 4}
    net.raw(2).propose_conf_change(add_voter(5))
    net.stabilize()
    assert net[2].raw.conf_state().voters == {1, 2, 3, 4, 5}
