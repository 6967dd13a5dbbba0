"""Thesis §6.4: processing read-only queries more efficiently (ReadIndex)."""

from __future__ import annotations

import pytest

from copycat.errors import NotLeaderError
from copycat.raft import (
    AppendEntries,
    Heartbeat,
    ReadIndex,
    ReadIndexResponse,
    ReadOnlyOption,
    ReadState,
)

from ..harness import Network, of_type


def test_leader_read_waits_for_a_heartbeat_quorum() -> None:
    """ "The leader saves its current commit index in a local variable readIndex. ...
    The leader needs to make sure it hasn't been superseded by a newer leader of which
    it is unaware. It issues a new round of heartbeats and waits for their
    acknowledgments from a majority of the cluster." (thesis §6.4, steps 2-3)"""
    # init
    net = Network((1, 2, 3))
    leader = net.elect(1)
    net.propose(1, b"x")
    commit = leader.commit

    # act 1: the request, and the leader's own ready
    net.raw(1).read_index(b"r1")
    net.process(1)

    # check 1: heartbeats carry the request; no answer yet
    beats = of_type(net.inflight, Heartbeat)
    assert sorted(m.to for m in beats) == [2, 3]
    assert all(m.context == b"r1" for m in beats)
    assert leader.read_states == []

    # act 2: one follower acknowledges (with the leader, a majority)
    net.deliver(lambda m: m.to == 2)
    net.process(2)
    net.deliver(lambda m: m.sender == 2)
    net.process(1)

    # check 2
    assert leader.read_states == [ReadState(index=commit, context=b"r1")]


def test_leader_read_needs_acknowledgements_from_a_majority() -> None:
    """ "waits for their acknowledgments from a majority of the cluster" (thesis §6.4):
    in a five-voter group one follower's acknowledgement is not enough; a second one
    is."""
    # init
    net = Network((1, 2, 3, 4, 5))
    leader = net.elect(1)
    net.isolate(3)
    net.isolate(4)
    net.isolate(5)

    # act 1: only node 2 acknowledges the round
    net.raw(1).read_index(b"r")
    net.stabilize()

    # check 1
    assert leader.read_states == []

    # act 2: node 3 is back in time to answer the next heartbeat with the context
    net.heal()
    net.isolate(4)
    net.isolate(5)
    net.raw(1).read_index(b"r2")
    net.stabilize()

    # check 2: both reads are answered (acknowledging the later one confirms both)
    assert [rs.context for rs in leader.read_states] == [b"r", b"r2"]


def test_leader_read_without_a_quorum_is_never_answered() -> None:
    """ "waits for their acknowledgments from a majority of the cluster" (thesis §6.4):
    a leader cut off from the others answers nothing."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.isolate(1)

    # act
    net.raw(1).read_index(b"r1")
    net.stabilize()
    net.tick_all(3, nodes=(1,))

    # check
    assert net[1].read_states == []


def test_follower_read_is_forwarded_to_the_leader() -> None:
    """ "the follower issues a request to the leader asking for the current readIndex.
    ... the follower then proceeds with steps 4 and 5 (waiting for its state machine
    to advance)." (thesis §6.4)"""
    # init
    net = Network((1, 2, 3))
    leader = net.elect(1)
    net.propose(1, b"x")
    net.sent.clear()

    # act
    net.raw(2).read_index(b"f1")
    net.stabilize()

    # check
    assert [(m.sender, m.to) for m in of_type(net.sent, ReadIndex)] == [(2, 1)]
    assert [(m.to, m.index) for m in of_type(net.sent, ReadIndexResponse)] == [(2, leader.commit)]
    assert net[2].read_states == [ReadState(index=leader.commit, context=b"f1")]
    assert leader.read_states == []


def test_single_voter_answers_at_once() -> None:
    """A one-voter group is its own majority (thesis §6.4): the read is answered in the
    very next ready, with no messages."""
    # init
    net = Network((1,))
    leader = net.elect(1)
    net.propose(1, b"x")

    # act
    net.raw(1).read_index(b"solo")
    net.process(1)

    # check
    assert leader.read_states == [ReadState(index=leader.commit, context=b"solo")]
    assert net.inflight == []


def test_new_leader_answers_only_after_committing_an_entry_of_its_term() -> None:
    """ "If the leader has not yet marked an entry from its current term committed, it
    waits until it has done so. The Leader Completeness Property guarantees that a
    leader has all committed entries, but at the start of its term, it may not know
    which those are." (thesis §6.4, step 1)"""
    # init: node 1 wins, but its appends (and so its empty entry) go nowhere
    net = Network((1, 2, 3))
    net.drop(lambda m: isinstance(m, AppendEntries))
    leader = net.elect(1)
    assert leader.commit < leader.last_index()

    # act 1
    net.raw(1).read_index(b"early")
    net.stabilize()

    # check 1
    assert leader.read_states == []

    # act 2: appends flow again
    net.heal()
    net.tick(1)
    net.stabilize()

    # check 2: answered, with a read index that includes the new term's entry
    assert leader.commit == leader.last_index()
    assert leader.read_states == [ReadState(index=leader.commit, context=b"early")]


def test_reads_are_answered_in_order() -> None:
    """Several reads waiting on one leader are answered in order, each with the commit
    index of its own arrival (thesis §6.4, step 2)."""
    # init
    net = Network((1, 2, 3))
    leader = net.elect(1)
    first_commit = leader.commit

    # act
    net.raw(1).read_index(b"a")
    net.process(1)
    net.propose(1, b"x")
    net.raw(1).read_index(b"b")
    net.stabilize()

    # check
    assert leader.read_states == [
        ReadState(index=first_commit, context=b"a"),
        ReadState(index=leader.commit, context=b"b"),
    ]
    assert leader.commit > first_commit


def test_follower_without_a_leader_refuses_the_read() -> None:
    """A follower forwards reads "to the leader" (thesis §6.4); with no leader known it
    refuses with `NotLeaderError` instead of queueing the read forever."""
    # init
    net = Network((1, 2, 3))

    # act / check
    with pytest.raises(NotLeaderError) as info:
        net.raw(2).read_index(b"r")
    assert info.value.leader_hint is None


def test_lease_based_read_skips_the_heartbeat_round() -> None:
    """ "Raft ... could use a lease ... the leader would use the normal heartbeat
    mechanism to maintain a lease ... it would then reply to read-only queries without
    waiting" (thesis §6.4.1): with LEASE_BASED the leader answers at once. Just elected,
    its lease rests on the acknowledged appends of its new term (sent no earlier than
    its election); `test_lease_read.py` covers the lease itself."""
    # init
    net = Network((1, 2, 3), read_only=ReadOnlyOption.LEASE_BASED)
    leader = net.elect(1)

    # act
    net.raw(1).read_index(b"lease")
    net.process(1)

    # check
    assert leader.read_states == [ReadState(index=leader.commit, context=b"lease")]
    assert not of_type(net.inflight, Heartbeat)


def test_read_index_needs_a_context() -> None:
    """A ReadState is matched to its request by context (thesis §6.4 as in etcd); an
    empty one is a local misuse and raises at once."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)

    # act / check
    with pytest.raises(ValueError, match="context"):
        net.raw(1).read_index(b"")
