"""Proposals: forwarding to the leader (paper §8: "If a client contacts a follower,
the follower ... " redirects it), typed refusals, and the leader's flow control
(etcd: max uncommitted bytes, max in-flight messages, max bytes per append)."""

from __future__ import annotations

import pytest

from copycat.errors import NotLeaderError, ProposalDroppedError
from copycat.raft import (
    AppendEntries,
    ProgressState,
    Propose,
    entry_size,
)

from ..harness import Network, of_type


def test_follower_forwards_a_proposal_to_the_leader() -> None:
    """ "The leader handles all client requests (if a client contacts a follower, the
    follower redirects it to the leader)." (§5.1) Here the follower forwards the
    proposal itself."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.sent.clear()

    # act
    net.raw(2).propose(b"via 2")
    net.stabilize()

    # check
    assert [(m.sender, m.to) for m in of_type(net.sent, Propose)] == [(2, 1)]
    assert all(net.data(i) == [b"via 2"] for i in net.nodes)


def test_learner_forwards_a_proposal_to_the_leader() -> None:
    """A non-voting member (thesis §4.2.1) is a follower for clients: it forwards
    proposals to the leader like any follower (§5.1)."""
    # init
    net = Network((1, 2, 3), learners=(4,))
    net.elect(1)
    net.sent.clear()

    # act
    net.raw(4).propose(b"via learner")
    net.stabilize()

    # check
    assert [(m.sender, m.to) for m in of_type(net.sent, Propose)] == [(4, 1)]
    assert all(net.data(i) == [b"via learner"] for i in net.nodes)


def test_without_forwarding_a_follower_names_the_leader() -> None:
    """ "if a client contacts a follower, the follower redirects it to the leader"
    (§5.1): with `forward_proposals=False` the follower raises `NotLeaderError` with
    the leader's id as a hint, and sends nothing."""
    # init
    net = Network((1, 2, 3), forward_proposals=False)
    net.elect(1)
    net.sent.clear()

    # act / check
    with pytest.raises(NotLeaderError) as info:
        net.raw(2).propose(b"x")
    assert info.value.leader_hint == 1
    net.stabilize()
    assert not of_type(net.sent, Propose)
    net.propose(1, b"direct")
    assert net.data(2) == [b"direct"]


def test_proposal_without_a_known_leader_is_refused() -> None:
    """A proposal made while no leader is known (before the first election, or during
    one, §5.2) is refused with `NotLeaderError(None)` rather than queued forever."""
    # init: a new group, and a candidate of a group without a majority
    net = Network((1, 2, 3))

    # act / check: a follower that never heard of a leader
    with pytest.raises(NotLeaderError) as info:
        net.raw(1).propose(b"x")
    assert info.value.leader_hint is None

    # act / check: a candidate
    net.isolate(2)
    net.isolate(3)
    net.campaign(2)
    with pytest.raises(NotLeaderError) as info:
        net.raw(2).propose(b"x")
    assert info.value.leader_hint is None
    assert net[2].last_index() == 3


def test_leader_refuses_proposals_past_max_uncommitted_bytes() -> None:
    """The leader bounds the bytes it holds beyond its commit index and refuses more
    with `ProposalDroppedError`; once entries commit it accepts again (etcd
    MaxUncommittedEntriesSize)."""
    # init: nothing can commit
    net = Network((1, 2, 3), max_uncommitted_bytes=1000)
    leader = net.elect(1)
    net.isolate(2)
    net.isolate(3)

    # act / check: 400 + 400 fit, a third 400 does not
    net.raw(1).propose(b"a" * 400)
    net.raw(1).propose(b"b" * 400)
    last = leader.raw.last_index()
    with pytest.raises(ProposalDroppedError, match="uncommitted"):
        net.raw(1).propose(b"c" * 400)
    assert leader.raw.last_index() == last
    assert net.raw(1).status().dropped_proposals == 1

    # act / check: once they commit there is room again
    net.heal()
    net.tick_all(2)
    assert net.data(1) == [b"a" * 400, b"b" * 400]
    net.propose(1, b"c" * 400)
    assert net.data(1)[-1] == b"c" * 400


def test_one_oversized_proposal_is_accepted_when_nothing_is_uncommitted() -> None:
    """The byte limit never blocks progress: with nothing uncommitted, one proposal
    larger than the limit is accepted (etcd does the same)."""
    # init
    net = Network((1, 2, 3), max_uncommitted_bytes=100)
    net.elect(1)

    # act
    net.propose(1, b"z" * 500)

    # check
    assert net.data(1) == [b"z" * 500]


def test_forwarded_proposal_refused_by_the_leader_is_counted() -> None:
    """A refusal at the leader of a forwarded proposal cannot be raised at the
    follower; the leader counts it in `dropped_proposals`."""
    # init
    net = Network((1, 2, 3), max_uncommitted_bytes=100)
    net.elect(1)
    net.isolate(3)
    net.drop(lambda m: m.to == 1 and not isinstance(m, Propose))  # nothing commits
    net.propose(1, b"a" * 80)

    # act
    net.propose(2, b"b" * 80)

    # check
    assert net.raw(1).status().dropped_proposals == 1
    assert [e.data for e in net[1].raw._raft.log.all_entries()][-1] == b"a" * 80


def test_max_inflight_msgs_pauses_a_replicating_follower() -> None:
    """Flow control: a follower in REPLICATE gets at most `max_inflight_msgs` appends
    that it has not acknowledged yet; the rest wait (etcd Inflights)."""
    # init
    net = Network((1, 2, 3), max_inflight_msgs=2)
    net.elect(1)
    assert net.raw(1).status().progress[2].state == ProgressState.REPLICATE

    # act: five proposals, nothing delivered
    for i in range(5):
        net.raw(1).propose(bytes([i]))
        net.process(1)

    # check: two appends in flight per follower, and the follower is paused
    for follower in (2, 3):
        appends = [m for m in of_type(net.inflight, AppendEntries) if m.to == follower]
        assert len(appends) == 2
        assert net.raw(1).status().progress[follower].paused
    net.stabilize()
    assert all(net.data(i) == [bytes([i]) for i in range(5)] for i in net.nodes)


def test_acknowledgements_reopen_the_inflight_window() -> None:
    """Flow control: each acknowledgement frees room in the window and the leader
    sends the entries that waited (etcd Inflights.FreeLE)."""
    # init
    net = Network((1, 2, 3), max_inflight_msgs=1)
    leader = net.elect(1)
    for i in range(3):
        net.raw(1).propose(bytes([i]))
        net.process(1)
    assert net.raw(1).status().progress[2].paused

    # act: node 2 acknowledges its one append
    net.deliver(lambda m: m.to == 2)
    net.process(2)
    net.deliver(lambda m: m.sender == 2)
    net.process(1)

    # check: the waiting entries went out at once, in one append
    [append] = [m for m in of_type(net.inflight, AppendEntries) if m.to == 2]
    assert [e.data for e in append.entries] == [bytes([1]), bytes([2])]
    net.stabilize()
    assert net[2].log() == leader.log()


def test_max_msg_bytes_bounds_each_append() -> None:
    """Flow control: one append carries at most `max_msg_bytes` of entries (a single
    entry may exceed it alone), so catching a follower up takes several appends (etcd
    MaxSizePerMsg)."""
    # init: node 2 misses ten 100-byte entries
    limit = 3 * (100 + 16)
    net = Network((1, 2, 3), max_msg_bytes=limit)
    leader = net.elect(1)
    net.isolate(2)
    net.propose(1, *(bytes([i]) * 100 for i in range(10)))
    net.heal()
    net.sent.clear()

    # act
    net.tick_all(2)

    # check
    appends = [m for m in of_type(net.sent, AppendEntries) if m.to == 2 and m.entries]
    assert len(appends) >= 4
    for m in appends:
        assert sum(entry_size(e) for e in m.entries) <= limit or len(m.entries) == 1
    assert max(len(m.entries) for m in appends) == 3
    assert net[2].log() == leader.log()


def test_an_entry_larger_than_max_msg_bytes_is_sent_alone() -> None:
    """ "one entry may exceed it alone" (RaftConfig.max_msg_bytes): an oversized entry
    still goes out, by itself."""
    # init
    net = Network((1, 2, 3), max_msg_bytes=50)
    net.elect(1)
    net.sent.clear()

    # act
    net.raw(1).propose_many([b"x" * 200, b"y" * 10])
    net.stabilize()

    # check
    appends = [m for m in of_type(net.sent, AppendEntries) if m.to == 2 and m.entries]
    assert [len(m.entries) for m in appends] == [1, 1]
    assert net.data(2) == [b"x" * 200, b"y" * 10]
