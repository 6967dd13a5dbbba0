"""Raft paper §7: log compaction. Snapshots, InstallSnapshot to a follower that is
too far behind, what a follower keeps of its log, and how the host's report of a
snapshot's fate moves the leader's progress (etcd's PROBE / REPLICATE / SNAPSHOT)."""

from __future__ import annotations

import msgpack

from copycat.raft import (
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    InstallSnapshot,
    ProgressState,
    Snapshot,
    SnapshotMetadata,
    add_voter,
)

from ..harness import Network, of_type


def _lagging_follower(entries: int = 10) -> Network:
    """A group where node 1 leads and node 3 missed `entries` entries that node 1 then
    compacted away."""
    net = Network((1, 2, 3))
    net.elect(1)
    net.isolate(3)
    net.propose(1, *(f"e{i}".encode() for i in range(entries)))
    net.compact(1)
    net.heal()
    net.sent.clear()
    return net


def test_compacting_the_log_keeps_the_group_running() -> None:
    """ "In snapshotting, the entire current system state is written to a snapshot on
    stable storage, then the entire log up to that point is discarded." (§7)"""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.propose(1, b"a", b"b")
    applied = net[1].applied_index

    # act
    snapshot = net.compact(1)
    net.propose(1, b"c")

    # check
    assert snapshot.metadata.index == applied
    assert snapshot.metadata.conf_state == ConfState(voters=frozenset({1, 2, 3}))
    assert net[1].storage.first_index() == applied + 1
    assert [e.data for e in net[1].log()] == [b"c"]
    assert all(net.data(i) == [b"a", b"b", b"c"] for i in net.nodes)
    assert not of_type(net.sent, InstallSnapshot)


def test_leader_sends_a_snapshot_to_a_follower_that_is_too_far_behind() -> None:
    """ "The leader uses a new RPC called InstallSnapshot to send snapshots to followers
    that are too far behind ... when the leader has already discarded the next log
    entry that it needs to send to a follower." (§7)"""
    # init
    net = _lagging_follower()
    snapshot_index = net[1].storage.snapshot().metadata.index

    # act
    net.tick_all(2)

    # check
    sent = [m for m in of_type(net.sent, InstallSnapshot) if m.to == 3]
    assert len(sent) == 1
    assert sent[0].snapshot.metadata.index == snapshot_index
    assert net.data(3) == net.data(1)
    assert net.raw(1).status().progress[3].state == ProgressState.REPLICATE


def test_follower_restores_the_snapshot_and_then_follows_the_log() -> None:
    """ "Usually the snapshot will contain new information not already in the
    recipient's log. In this case, the follower discards its entire log; it is all
    superseded by the snapshot" (§7). Afterwards it replicates as usual."""
    # init
    net = _lagging_follower()
    snapshot = net[1].storage.snapshot()

    # act
    net.tick_all(2)
    net.propose(1, b"after")

    # check
    follower = net[3]
    assert follower.snapshots_installed == [snapshot]
    assert follower.storage.snapshot() == snapshot
    assert follower.storage.first_index() == snapshot.metadata.index + 1
    assert follower.log() == net[1].log()
    assert follower.raw.conf_state() == snapshot.metadata.conf_state
    assert net.data(3) == [*(f"e{i}".encode() for i in range(10)), b"after"]


def test_snapshot_with_conflicting_entries_replaces_the_follower_log() -> None:
    """ "the follower discards its entire log; it is all superseded by the snapshot and
    may possibly have uncommitted entries that conflict with the snapshot." (§7)"""
    # init: node 1 holds uncommitted entries 4..8 of term 2
    net = Network((1, 2, 3))
    entries = tuple(Entry(term=2, index=i, data=bytes([i])) for i in range(4, 9))
    net.step(AppendEntries(term=2, sender=2, to=1, prev_index=3, prev_term=1, entries=entries))
    net.process(1)
    net.take()
    cs = ConfState(voters=frozenset({1, 2, 3}))
    snapshot = Snapshot(
        metadata=SnapshotMetadata(index=6, term=3, conf_state=cs), data=msgpack.packb([b"s"])
    )

    # act
    net.step(InstallSnapshot(term=3, sender=3, to=1, snapshot=snapshot))
    net.process(1)

    # check
    assert net[1].storage.snapshot() == snapshot
    assert net[1].last_index() == 6
    assert net[1].log() == []
    assert net[1].commit == 6
    assert net.data(1) == [b"s"]
    [response] = of_type(net.take(), AppendEntriesResponse)
    assert (response.index, response.reject) == (6, False)


def test_snapshot_of_a_prefix_of_the_follower_log_keeps_the_entries_after_it() -> None:
    """ "If instead the follower receives a snapshot that describes a prefix of its log
    (due to retransmission or by mistake), then log entries covered by the snapshot are
    deleted but entries following the snapshot are still valid and must be retained."
    (§7) The core keeps its own copy of the covered entries and learns that they are
    committed."""
    # init: node 1 holds uncommitted entries 4..8 of term 2
    net = Network((1, 2, 3))
    entries = tuple(Entry(term=2, index=i, data=bytes([i])) for i in range(4, 9))
    net.step(AppendEntries(term=2, sender=2, to=1, prev_index=3, prev_term=1, entries=entries))
    net.process(1)
    net.take()
    cs = ConfState(voters=frozenset({1, 2, 3}))
    snapshot = Snapshot(
        metadata=SnapshotMetadata(index=6, term=2, conf_state=cs), data=msgpack.packb([])
    )

    # act
    net.step(InstallSnapshot(term=2, sender=2, to=1, snapshot=snapshot))
    net.process(1)

    # check
    assert [e.index for e in net[1].log()][-5:] == [4, 5, 6, 7, 8]
    assert net[1].commit == 6
    assert net.data(1) == [bytes([4]), bytes([5]), bytes([6])]
    [response] = of_type(net.take(), AppendEntriesResponse)
    assert not response.reject
    assert response.index == 6


def test_snapshot_older_than_the_commit_index_is_ignored() -> None:
    """A follower never goes back: a snapshot at or below its commit index "describes
    a prefix of its log" that it has already committed (§7), so nothing changes."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.propose(1, b"a", b"b", b"c")
    before = net[2].log()
    commit = net[2].commit
    cs = ConfState(voters=frozenset({1, 2, 3}))
    snapshot = Snapshot(
        metadata=SnapshotMetadata(index=4, term=2, conf_state=cs), data=msgpack.packb([])
    )

    # act
    net.step(InstallSnapshot(term=net[1].term, sender=1, to=2, snapshot=snapshot))
    net.process(2)

    # check
    assert net[2].log() == before
    assert net[2].snapshots_installed == []
    assert net.data(2) == [b"a", b"b", b"c"]
    [response] = of_type(net.take(), AppendEntriesResponse)
    assert response.index == commit


def test_appends_pause_while_a_snapshot_is_in_flight() -> None:
    """The leader sends a follower that needs a snapshot nothing else until it learns
    how the snapshot fared (etcd: the SNAPSHOT progress state is paused)."""
    # init: the snapshot to node 3 is lost in transit
    net = _lagging_follower()
    net.drop(lambda m: isinstance(m, InstallSnapshot))
    net.tick_all(1)
    assert of_type(net.dropped, InstallSnapshot)
    net.sent.clear()

    # act
    net.propose(1, b"more")
    net.tick_all(3)

    # check
    progress = net.raw(1).status().progress[3]
    assert progress.state == ProgressState.SNAPSHOT
    assert progress.paused
    assert not [m for m in of_type(net.sent, AppendEntries) if m.to == 3]
    assert not [m for m in of_type(net.sent, InstallSnapshot) if m.to == 3]


def test_report_snapshot_failure_sends_the_leader_back_to_probing() -> None:
    """When the host reports that a snapshot could not be delivered, the leader probes
    the follower again from its last known match, and later sends a fresh snapshot
    (§7; etcd's ReportSnapshot(SnapshotFailure))."""
    # init
    net = _lagging_follower()
    net.drop(lambda m: isinstance(m, InstallSnapshot))
    net.tick_all(1)
    match = net.raw(1).status().progress[3].match
    net.heal()

    # act
    net.raw(1).report_snapshot(3, success=False)

    # check
    progress = net.raw(1).status().progress[3]
    assert progress.state == ProgressState.PROBE
    assert progress.next == match + 1
    assert progress.paused  # until the next heartbeat response
    net.sent.clear()
    net.tick_all(2)
    assert len([m for m in of_type(net.sent, InstallSnapshot) if m.to == 3]) == 1
    assert net.data(3) == net.data(1)


def test_report_snapshot_success_resumes_after_the_snapshot() -> None:
    """When the host reports that a snapshot was delivered, the leader goes on from
    the entry after the snapshot (§7; etcd's ReportSnapshot(SnapshotFinish)), without
    sending it again."""
    # init: node 3 installs the snapshot but its acknowledgement is lost
    net = _lagging_follower()
    snapshot_index = net[1].storage.snapshot().metadata.index
    net.drop(lambda m: m.sender == 3 and isinstance(m, AppendEntriesResponse) and not m.reject)
    net.tick_all(1)
    assert net[3].storage.snapshot().metadata.index == snapshot_index
    assert net.raw(1).status().progress[3].state == ProgressState.SNAPSHOT
    net.heal()

    # act
    net.raw(1).report_snapshot(3, success=True)

    # check
    progress = net.raw(1).status().progress[3]
    assert progress.state == ProgressState.PROBE
    assert progress.next == snapshot_index + 1
    net.sent.clear()
    net.propose(1, b"after")
    net.tick_all(2)
    assert not of_type(net.sent, InstallSnapshot)
    assert net.raw(1).status().progress[3].state == ProgressState.REPLICATE
    assert net.data(3) == net.data(1)


def test_report_snapshot_is_ignored_unless_a_snapshot_is_pending() -> None:
    """A report about a follower the leader is not sending a snapshot to changes
    nothing (etcd ignores it too)."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    before = net.raw(1).status().progress[2]

    # act
    net.raw(1).report_snapshot(2, success=False)

    # check
    assert net.raw(1).status().progress[2] == before


def test_new_member_receives_a_snapshot_then_its_own_admission() -> None:
    """A server added after the log was compacted cannot receive the entries from the
    beginning: "The leader uses a new RPC called InstallSnapshot to send snapshots to
    followers that are too far behind" (§7); the entries after the snapshot, including
    the change that admits it, follow."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.propose(1, b"a", b"b")
    net.compact(1)
    net.add_node(4)

    # act
    net.raw(1).propose_conf_change(add_voter(4))
    net.stabilize()
    net.tick_all(2)

    # check
    assert len(net[4].snapshots_installed) == 1
    assert net[4].raw.conf_state() == ConfState(voters=frozenset({1, 2, 3, 4}))
    assert net.data(4) == [b"a", b"b"]
    assert net[4].log() == net[1].log()


def test_restart_from_a_snapshot_replays_only_the_entries_after_it() -> None:
    """ "the entire current system state is written to a snapshot on stable storage"
    (§7): a server that restarts rebuilds its state from the snapshot and the log
    entries after it."""
    # init
    net = Network((1, 2, 3))
    net.elect(1)
    net.propose(1, b"a", b"b")
    net.compact(2, keep=1)
    net.propose(1, b"c")
    snapshot_index = net[2].storage.snapshot().metadata.index

    # act
    node = net.restart(2)
    net.stabilize()

    # check
    assert node.data == [b"a", b"b", b"c"]
    assert [e.index for e in node.applied] == list(
        range(snapshot_index + 1, node.applied_index + 1)
    )
    net.tick_all(2)
    assert net[2].role.name == "FOLLOWER"
    assert net.data(2) == net.data(1)
