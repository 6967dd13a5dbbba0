"""Thesis §6.4.1: lease-based reads (ReadOnlyOption.LEASE_BASED).

"The leader would use the normal heartbeat mechanism to maintain a lease ... once the
leader's heartbeats were acknowledged by a majority of the cluster, it would extend its
lease to start + election timeout / clock drift bound, since the followers shouldn't
time out before then." (thesis §6.4.1) The lease is measured from when the leader
*sent* the acknowledged heartbeat, in the leader's ticks, less `lease_drift_ticks`.
Without a lease the read takes the safe ReadIndex path (a heartbeat round)."""

from __future__ import annotations

import pytest

from copycat.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    DeliberateBugs,
    Heartbeat,
    ReadOnlyOption,
    ReadState,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
)
from copycat.raft._raft import LEASE_CONTEXT_PREFIX
from copycat.raft._tracker import ProgressTracker, TrackerConfig

from ..harness import Network, of_type

pytestmark = pytest.mark.timeout(20)

ELECTION_TICKS = 10
LEASE = {"read_only": ReadOnlyOption.LEASE_BASED, "election_ticks": ELECTION_TICKS}


def test_an_isolated_old_leader_does_not_answer_a_lease_read_stale() -> None:
    """ "the leader ... would then reply to read-only queries without waiting ... [this]
    assumes a bound on clock drift" (thesis §6.4.1) -- and nothing more: with every clock
    running at the same rate, a leader cut off from the others must stop answering from
    its lease before the others may elect a new leader. Check-quorum alone lets it lead
    for up to two election timeouts, while followers grant votes after one."""
    # init and act 1: node 1 led and committed; cut off, the others elect and commit more
    net, old_commit, new_id = _old_leader_cut_off()
    old = net[1]
    assert net[new_id].commit > old_commit

    # the old leader has not noticed yet (check-quorum has not stepped it down)
    assert old.role == Role.LEADER

    # act 2: a lease read on the old leader
    net.raw(1).read_index(b"stale?")
    net.stabilize()

    # check: no answer at the old commit index (nor any answer: it cannot reach anyone)
    assert old.read_states == []
    assert of_type(net.dropped, Heartbeat)[-1].context == b"stale?"


def test_the_deliberate_bug_brings_the_stale_read_back() -> None:
    """The scenario above with `stale_lease_reads` (the behaviour of issue 15: the
    lease is check-quorum alone): the old leader answers at its old commit index while
    the new leader has committed more. Shows the scenario reaches the unsafe moment."""
    # init
    net, old_commit, new_id = _old_leader_cut_off(DeliberateBugs(stale_lease_reads=True))
    old = net[1]
    assert old.role == Role.LEADER

    # act
    net.raw(1).read_index(b"stale")
    net.stabilize()

    # check
    assert old.read_states == [ReadState(index=old_commit, context=b"stale")]
    assert old_commit < net[new_id].commit


def _old_leader_cut_off(bugs: DeliberateBugs | None = None) -> tuple[Network, int, int]:
    """Node 1 leads {1, 2, 3} and commits an entry, then is cut off; time passes until
    the others elect a new leader, which commits one more. Returns the network, node
    1's commit index before the cut, and the new leader's id."""
    extra = {} if bugs is None else {"bugs": bugs}
    net = Network((1, 2, 3), **LEASE, **extra)
    old = net.elect(1)
    net.propose(1, b"x")
    old_commit = old.commit
    net.isolate(1)
    for _ in range(4 * ELECTION_TICKS):
        net.tick_all(1)
        if any(net[i].role == Role.LEADER for i in (2, 3)):
            break
    (new_id,) = [i for i in (2, 3) if net[i].role == Role.LEADER]
    net.propose(new_id, b"y")
    return net, old_commit, new_id


def _leader_past_its_first_lease() -> Network:
    """Node 1 leads {1, 2, 3}, committed an entry, and has ticked past the lease its
    election gave it (acknowledged appends count from the moment it took office):
    from here only acknowledged lease heartbeats can hold its lease."""
    net = Network((1, 2, 3), **LEASE)
    net.elect(1)
    net.propose(1, b"x")
    net.tick_all(2 * ELECTION_TICKS)
    assert net[1].role == Role.LEADER
    return net


def _answered_at_once(net: Network, context: bytes) -> bool:
    """Ask node 1 for a read and run only its next ready: True when the read is answered
    there; otherwise it must have started a heartbeat round carrying the context."""
    net.raw(1).read_index(context)
    net.process(1)
    answered = [rs for rs in net[1].read_states if rs.context == context]
    beats = [m for m in of_type(net.inflight, Heartbeat) if m.context == context]
    assert bool(answered) != bool(beats), (answered, beats)
    return bool(answered)


def test_a_leader_with_a_fresh_quorum_of_acks_answers_at_once() -> None:
    """ "once the leader's heartbeats were acknowledged by a majority of the cluster, it
    would extend its lease" and "reply to read-only queries without waiting" (thesis
    §6.4.1): long after its election, heartbeats acknowledged every tick keep the lease,
    and the read is answered in the very next ready, with no heartbeat round."""
    # init
    net = _leader_past_its_first_lease()
    commit = net[1].commit

    # act / check
    assert _answered_at_once(net, b"fresh")
    assert net[1].read_states == [ReadState(index=commit, context=b"fresh")]


def test_the_lease_counts_from_when_the_acknowledged_heartbeat_was_sent() -> None:
    """The lease starts "at the time it sent the heartbeats" (thesis §6.4.1), not when
    the acknowledgements arrived: acknowledgements of heartbeats sent
    `election_ticks - lease_drift_ticks` ticks ago or earlier renew nothing, however
    late they come; one tick younger, they do."""
    window = ELECTION_TICKS - 2  # the default lease_drift_ticks
    for age, held in ((window, False), (window - 1, True)):
        # init: one round of heartbeats leaves node 1, and is held back
        net = _leader_past_its_first_lease()
        net.tick(1)
        net.process(1)
        held_back = net.take(lambda m: isinstance(m, Heartbeat))
        assert sorted(m.to for m in held_back) == [2, 3]

        # act: `age` ticks later (nothing else gets through meanwhile), the heartbeats
        # arrive and are acknowledged
        net.isolate(1)
        net.tick(1, age)
        net.process(1)
        net.take()
        net.heal()
        for m in held_back:
            net.step(m)
        net.process(2)
        net.process(3)
        net.deliver()
        net.process(1)
        net.take()

        # check
        assert net[1].role == Role.LEADER
        assert _answered_at_once(net, b"late") is held, f"heartbeats {age} ticks old"


@pytest.mark.parametrize("silent", [(4, 5), (2, 3)])
def test_a_joint_configuration_needs_both_quorums_for_a_lease(silent: tuple[int, int]) -> None:
    """ "Agreement (for elections and entry commitment) requires separate majorities
    from both the old and new configurations" (paper §6): so does the lease, since a
    new leader needs both. Fresh acknowledgements from one majority alone (the old, or
    the new) hold no lease; with both again, the read is answered at once."""
    # init: an explicit joint configuration from {1,2,3} to {1,4,5}
    net = Network((1, 2, 3), **LEASE)
    net.elect(1)
    net.add_node(4)
    net.add_node(5)
    net.raw(1).propose_conf_change(
        ConfChange(
            changes=(
                ConfChangeSingle(type=ConfChangeType.ADD_VOTER, node_id=4),
                ConfChangeSingle(type=ConfChangeType.ADD_VOTER, node_id=5),
                ConfChangeSingle(type=ConfChangeType.REMOVE_NODE, node_id=2),
                ConfChangeSingle(type=ConfChangeType.REMOVE_NODE, node_id=3),
            ),
            transition=ConfChangeTransition.JOINT_EXPLICIT,
        )
    )
    net.stabilize()
    cs = net[1].raw.conf_state()
    assert (cs.voters, cs.voters_outgoing) == ({1, 4, 5}, {1, 2, 3})
    net.tick_all(ELECTION_TICKS)
    assert _answered_at_once(net, b"both")

    # act: one half's voters stop answering until their acknowledgements are too old
    for node_id in silent:
        net.isolate(node_id)
    net.tick_all(ELECTION_TICKS - 2)
    assert net[1].role == Role.LEADER

    # check: the other majority's fresh acknowledgements are not enough
    assert not _answered_at_once(net, b"one half")
    net.stabilize()
    assert [rs.context for rs in net[1].read_states] == [b"both"]  # the round cannot end

    # act / check: both majorities answer again
    net.heal()
    net.tick_all(1)
    assert _answered_at_once(net, b"both again")


@pytest.mark.parametrize("target_lags", [False, True])
def test_a_leader_transferring_leadership_holds_no_lease(target_lags: bool) -> None:
    """ "The prior leader sends a TimeoutNow request to the target server ... the target
    server starts a new election" (thesis §3.10), whose votes skip the followers'
    leases: the old leader answers no lease read from when the transfer begins (the
    target may still be catching up), and none for the rest of its term once TimeoutNow
    left, even after the transfer is given up. The read takes the ReadIndex round."""
    # init: node 1 holds its lease; its TimeoutNow messages are lost; a lagging target
    # is cut off from it (the lease rests on node 3's acknowledgements)
    net = _leader_past_its_first_lease()
    net.drop(lambda m: isinstance(m, TimeoutNow))
    if target_lags:
        net.cut(1, 2)
        net.propose(1, b"y")
    assert _answered_at_once(net, b"before")

    # act 1: the transfer begins
    net.raw(1).transfer_leader(2)
    net.process(1)
    assert net.raw(1).status().lead_transferee == 2
    assert any(isinstance(m, TimeoutNow) for m in net.dropped) is not target_lags

    # check 1: a read takes the round, and is answered when the round completes
    assert not _answered_at_once(net, b"during")
    net.stabilize()
    assert [rs.context for rs in net[1].read_states] == [b"before", b"during"]

    # act 2: the transfer times out and is given up; node 1 stays leader
    net.tick_all(ELECTION_TICKS + 1)
    assert net[1].role == Role.LEADER
    assert net.raw(1).status().lead_transferee == 0

    # check 2: the lease is back only if no TimeoutNow left in this term
    assert _answered_at_once(net, b"after") is target_lags


def test_a_restarted_follower_keeps_the_lease_it_may_have_granted() -> None:
    """A follower that acknowledged a LEASE_BASED leader and restarts forgot when; it
    ignores other candidates for an election timeout after it starts, as it would have
    without the crash (the leader counted on it). Then it votes as usual."""
    # init
    net = _leader_past_its_first_lease()
    net.restart(2)
    node = net[2].raw
    assert node.leader_id == 0

    # act / check: a pre-vote request from node 3 for the next term
    def pre_vote_granted() -> bool | None:
        last = node.last_index()
        net.step(
            RequestVote(
                term=net[1].term + 1,
                sender=3,
                to=2,
                last_log_index=last,
                last_log_term=node.term_at(last) or 0,
                pre_vote=True,
            )
        )
        answers = [m for m in net.take() if isinstance(m, RequestVoteResponse)]
        net.process(2)
        answers += [m for m in net.take() if isinstance(m, RequestVoteResponse)]
        return None if not answers else not answers[-1].reject

    assert pre_vote_granted() is None  # ignored
    net.tick(2, ELECTION_TICKS - 1)
    assert pre_vote_granted() is None
    net.tick(2)
    assert pre_vote_granted() is True


def test_lease_heartbeat_contexts_are_reserved() -> None:
    """A read whose context looks like a lease heartbeat's would, once echoed, pass for
    an acknowledgement of a heartbeat sent at whatever tick it names: refused."""
    net = _leader_past_its_first_lease()
    with pytest.raises(ValueError, match="reserved"):
        net.raw(1).read_index(LEASE_CONTEXT_PREFIX + (10**6).to_bytes(8, "big"))


@pytest.mark.parametrize(
    ("acked", "held"),
    [
        ({2, 3}, False),  # the old majority only
        ({4, 5}, False),  # the new majority only
        ({2, 4}, True),  # with the leader: 1,2 of {1,2,3} and 1,4 of {1,4,5}
        ({2, 3, 4, 5}, True),
        ({6}, False),  # a learner never counts
    ],
)
def test_quorum_acked_since_is_a_joint_quorum(acked: set[int], held: bool) -> None:
    """`ProgressTracker.quorum_acked_since` counts, per voter, the send tick of its
    latest acknowledged message, and needs both quorums of a joint configuration."""
    tracker = ProgressTracker(max_inflight_msgs=4, max_inflight_bytes=0)
    tracker.config = TrackerConfig(voters={1, 4, 5}, voters_outgoing={1, 2, 3}, learners={6})
    tracker.progress = {n: tracker.new_progress(1, n == 6) for n in range(1, 7)}
    for n in acked:
        tracker.progress[n].lease_tick = 20
    for n in set(range(2, 7)) - acked:
        tracker.progress[n].lease_tick = 19  # one tick too old
    assert tracker.quorum_acked_since(1, 20) is held
    assert tracker.quorum_acked_since(1, 21) is False


def test_a_follower_keeps_its_promise_when_a_stale_response_raises_its_term() -> None:
    """A follower can learn a higher term from a late answer to its own old campaign
    and forget its leader (no leader known in that term): in a LEASE_BASED group it
    still ignores other candidates until an election timeout has passed since it last
    heard from a leader, as its leader's lease counts on."""
    # init
    net = _leader_past_its_first_lease()
    term = net[1].term
    net.step(RequestVoteResponse(term=term + 1, sender=3, to=2, reject=True, pre_vote=True))
    assert (net[2].term, net[2].raw.leader_id) == (term + 1, 0)

    # act: node 3 asks node 2 for a pre-vote in the term after
    last = net[2].last_index()
    net.step(
        RequestVote(
            term=term + 2,
            sender=3,
            to=2,
            last_log_index=last,
            last_log_term=net[2].raw.term_at(last) or 0,
            pre_vote=True,
        )
    )
    net.process(2)

    # check: ignored
    assert of_type(net.take(), RequestVoteResponse) == []


def test_quiet_ticks_credited_to_a_leader_age_its_lease() -> None:
    """A host that stopped ticking a leader (quiescence) credits the ticks it missed
    (`credit_quiet_ticks`): the followers' clocks ran meanwhile, so the leader's lease
    must not outlast them."""
    # init
    net = _leader_past_its_first_lease()
    assert _answered_at_once(net, b"awake")

    # act
    net.raw(1).credit_quiet_ticks(ELECTION_TICKS)

    # check
    assert not _answered_at_once(net, b"after a nap")
    assert net[1].role == Role.LEADER  # check-quorum ignores the quiet ticks, as before
