"""The simulator's disk: what a power cut keeps (synced writes, a torn prefix of the
page cache), what it loses, and that a restart replays exactly the surviving state."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from copycat.errors import ClosedError, UnavailableError
from copycat.raft import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from copycat.storage import LogStore, WriteBatch
from copycat.testing.sim._disk import SimDisk

from ..storage.helpers import append, commit, make_entries

if TYPE_CHECKING:
    from collections.abc import Callable

G = 7
H = 9
CONF = ConfState(voters=frozenset({1, 2, 3}))


def log_of(store: LogStore, group: int = G) -> list[Entry]:
    log = store.group(group)
    return log.entries(log.first_index(), log.last_index() + 1)


def state_of(store: LogStore) -> dict[int, object]:
    """Everything a restarted node reads back, per group."""
    return {
        g: (
            log_of(store, g),
            store.group(g).first_index(),
            store.group(g).initial_state(),
            store.group(g).snapshot(),
            store.group(g).meta(),
            store.snapshots.list(g),
        )
        for g in store.groups()
    }


def fill(store: LogStore) -> None:
    """Entries, hard state, membership, metadata and a recorded snapshot in two groups."""
    append(store, G, make_entries(1, 6, term=1))
    commit(store, ("set_hard_state", G, HardState(term=1, vote=2, commit=5)))
    commit(store, ("set_conf_state", G, CONF), ("set_meta", G, b"rule"))
    meta = SnapshotMetadata(index=3, term=1, conf_state=CONF)
    store.snapshots.write_bytes(G, meta, b"state at 3")
    commit(store, ("record_snapshot", G, meta))
    append(store, H, make_entries(1, 3, term=2))


# -- durable ------------------------------------------------------------------------------


def test_a_durable_store_keeps_every_commit_through_a_power_cut() -> None:
    # init
    disk = SimDisk()
    store = disk.open()
    fill(store)
    before = state_of(store)

    # act: no sync, no close: the power goes
    lost = disk.crash()
    restored = disk.open()

    # check
    assert lost == 0
    assert disk.pending == []
    assert state_of(restored) == before
    assert restored.group(G).hard_state == HardState(term=1, vote=2, commit=5)
    assert restored.group(G).snapshot() == Snapshot(
        metadata=SnapshotMetadata(index=3, term=1, conf_state=CONF), data=b"state at 3"
    )
    assert disk.syncs >= 6  # one per commit, one per snapshot file


# -- non-durable --------------------------------------------------------------------------


def test_a_non_durable_store_loses_what_it_did_not_sync() -> None:
    # init
    disk = SimDisk(durable=False)
    store = disk.open()
    append(store, G, make_entries(1, 4, term=1))
    store.sync()
    append(store, G, make_entries(4, 8, term=1))
    commit(store, ("set_hard_state", G, HardState(term=1, commit=7)))
    assert store.group(G).last_index() == 7

    # act
    lost = disk.crash()
    restored = disk.open()

    # check
    assert lost == 2
    assert disk.ops_lost == 2
    assert log_of(restored) == make_entries(1, 4, term=1)
    assert restored.group(G).hard_state == HardState()


def test_a_clean_close_of_a_non_durable_store_syncs() -> None:
    # init
    disk = SimDisk(durable=False)
    store = disk.open()
    append(store, G, make_entries(1, 4, term=1))

    # act
    store.close()
    lost = disk.crash()

    # check
    assert lost == 0
    assert log_of(disk.open()) == make_entries(1, 4, term=1)


# -- the missing-fsync bug ----------------------------------------------------------------


def test_without_fsync_a_durable_commit_is_lost_in_a_power_cut() -> None:
    # init
    disk = SimDisk(fsync=False)
    store = disk.open()
    append(store, G, make_entries(1, 4, term=1))
    store.sync()
    syncs = disk.syncs

    # act
    lost = disk.crash()
    restored = disk.open()

    # check: the syncs were asked for and skipped
    assert syncs == 2
    assert disk.synced == []
    assert lost == 1
    assert restored.groups() == []
    assert restored.group(G).last_index() == 0


def test_without_fsync_a_clean_restart_still_reads_the_page_cache() -> None:
    # init
    disk = SimDisk(fsync=False)
    store = disk.open()
    append(store, G, make_entries(1, 4, term=1))

    # act: the process restarts, the machine does not
    store.close()
    restarted = disk.open()

    # check: the writes are there, and still not durable
    assert log_of(restarted) == make_entries(1, 4, term=1)
    assert disk.crash() == 1
    assert disk.open().groups() == []


# -- torn page cache ----------------------------------------------------------------------


def torn_last_index(seed: int) -> tuple[int, int]:
    """Ten one-entry commits left unsynced, then a torn power cut: (last index, lost)."""
    disk = SimDisk(durable=False)
    store = disk.open()
    for i in range(1, 11):
        append(store, G, make_entries(i, i + 1, term=1))
    lost = disk.crash(random.Random(seed), tear=True)
    restored = disk.open()
    assert log_of(restored) == make_entries(1, restored.group(G).last_index() + 1, term=1)
    return restored.group(G).last_index(), lost


@pytest.mark.parametrize("seed", range(8))
def test_a_torn_power_cut_keeps_a_prefix_of_whole_commits(seed: int) -> None:
    # init
    expected = random.Random(seed).randint(0, 10)

    # act
    first = torn_last_index(seed)
    second = torn_last_index(seed)

    # check: the state after exactly k commits, the same k for the same seed
    assert first == second == (expected, 10 - expected)


def test_tearing_keeps_something_for_some_seed() -> None:
    # act
    kept = {torn_last_index(seed)[0] for seed in range(8)}

    # check: without tearing every run would keep nothing
    assert kept - {0}
    assert kept <= set(range(11))


def test_without_tear_the_whole_page_cache_is_lost() -> None:
    # init
    disk = SimDisk(durable=False)
    store = disk.open()
    append(store, G, make_entries(1, 4, term=1))

    # act
    lost = disk.crash(random.Random(0))

    # check
    assert lost == 1
    assert disk.open().group(G).last_index() == 0


# -- lifecycle ----------------------------------------------------------------------------


def test_a_crashed_store_refuses_every_use() -> None:
    # init
    disk = SimDisk()
    store = disk.open()
    append(store, G, make_entries(1, 4, term=1))
    log = store.group(G)
    writer = store.snapshots.begin_write(G, SnapshotMetadata(index=2, term=1))

    # act
    disk.crash()

    # check
    assert store.closed
    calls: list[Callable[[], object]] = [
        lambda: store.groups(),
        lambda: store.group(G),
        lambda: append(store, G, make_entries(4, 5, term=1)),
        lambda: store.compact(G, 1),
        lambda: store.delete_group(G),
        lambda: store.sync(),
        lambda: store.close(),
        lambda: store.snapshots,
        lambda: log.last_index(),
        lambda: writer.write(b"data"),
        lambda: writer.finish(),
    ]
    for call in calls:
        with pytest.raises(ClosedError):
            call()
    assert disk.synced[-1][0] == "commit"  # nothing journaled after the cut


def test_only_one_store_of_a_disk_is_open_at_a_time() -> None:
    # init
    disk = SimDisk()
    store = disk.open()

    # act / check
    with pytest.raises(RuntimeError):
        disk.open()
    store.close()
    again = disk.open()
    with pytest.raises(RuntimeError):
        disk.open()
    disk.crash()
    disk.open()
    with pytest.raises(ClosedError):
        store.snapshots.list(G)  # closed, not crashed: its snapshots refuse too
    assert again.closed


def test_a_restart_replays_exactly_the_live_state() -> None:
    # init: every kind of write, deletions included
    disk = SimDisk(durable=False)
    store = disk.open()
    fill(store)
    with store.snapshots.begin_write(H, SnapshotMetadata(index=2, term=2)) as writer:
        writer.write(b"streamed ")
        writer.write(b"state")
    commit(store, ("install_snapshot", H, SnapshotMetadata(index=2, term=2)))
    store.snapshots.write_bytes(G, SnapshotMetadata(index=4, term=1), b"state at 4")
    store.snapshots.write_bytes(G, SnapshotMetadata(index=5, term=1), b"state at 5")
    commit(store, ("record_snapshot", G, SnapshotMetadata(index=5, term=1)))
    store.snapshots.write_bytes(G, SnapshotMetadata(index=1, term=1), b"old")  # kept for now
    store.snapshots.prune(G)  # now it goes
    store.snapshots.write_bytes(12, SnapshotMetadata(index=1, term=1), b"unrecorded")
    store.snapshots.delete_group(12)
    append(store, 11, make_entries(1, 2, term=1))
    store.delete_group(11)
    store.sync()
    before = state_of(store)

    # act
    disk.crash()
    restored = disk.open()

    # check
    assert state_of(restored) == before
    assert restored.groups() == [G, H]
    assert [m.index for m in restored.snapshots.list(G)] == [5, 4]
    assert restored.snapshots.list(12) == []
    assert restored.group(H).snapshot().data == b"streamed state"


def test_a_batch_changed_after_its_commit_replays_as_committed() -> None:
    # init
    disk = SimDisk()
    store = disk.open()
    entries = make_entries(1, 3, term=1)
    batch = WriteBatch()
    batch.append(G, entries)
    store.commit(batch)

    # act: the caller reuses its batch and list
    batch.append(G, make_entries(3, 5, term=1))
    entries.append(Entry(term=1, index=3))
    disk.crash()

    # check
    assert log_of(disk.open()) == make_entries(1, 3, term=1)


def test_a_failed_commit_journals_nothing() -> None:
    # init
    disk = SimDisk()
    store = disk.open()
    journal = len(disk.synced)

    # act: a gap
    with pytest.raises(UnavailableError):
        append(store, G, make_entries(5, 6, term=1))

    # check
    assert len(disk.synced) == journal
    assert disk.pending == []


# -- snapshots and compaction ---------------------------------------------------------------


def test_a_recorded_snapshot_survives_a_power_cut() -> None:
    # init
    disk = SimDisk()
    store = disk.open()
    append(store, G, make_entries(1, 6, term=1))
    meta = SnapshotMetadata(index=4, term=1, conf_state=CONF)
    with store.snapshots.begin_write(G, meta) as writer:
        writer.write(b"state ")
        writer.write(b"at 4")
    commit(store, ("record_snapshot", G, meta))
    live = store.group(G).snapshot()

    # act
    disk.crash()
    restored = disk.open()

    # check
    assert restored.group(G).snapshot() == live == Snapshot(metadata=meta, data=b"state at 4")
    assert (restored.group(G).first_index(), restored.group(G).last_index()) == (1, 5)


def test_an_installed_snapshot_survives_a_power_cut() -> None:
    # init
    disk = SimDisk()
    store = disk.open()
    append(store, G, make_entries(1, 3, term=1))
    meta = SnapshotMetadata(index=10, term=3, conf_state=CONF)
    store.snapshots.write_bytes(G, meta, b"leader state")
    commit(store, ("install_snapshot", G, meta))

    # act
    disk.crash()
    restored = disk.open()

    # check
    log = restored.group(G)
    assert log.snapshot() == Snapshot(metadata=meta, data=b"leader state")
    assert (log.first_index(), log.last_index()) == (11, 10)
    assert log.initial_state() == (HardState(), CONF)


def test_an_unsynced_snapshot_of_a_non_durable_store_is_lost_with_its_record() -> None:
    # init
    disk = SimDisk(durable=False)
    store = disk.open()
    append(store, G, make_entries(1, 6, term=1))
    store.sync()
    meta = SnapshotMetadata(index=4, term=1)
    store.snapshots.write_bytes(G, meta, b"state at 4")
    commit(store, ("record_snapshot", G, meta))

    # act
    lost = disk.crash()
    restored = disk.open()

    # check: neither the file nor the record that names it
    assert lost == 2
    assert restored.group(G).snapshot() == Snapshot()
    assert restored.snapshots.list(G) == []


def test_a_synced_compaction_survives_a_power_cut() -> None:
    # init
    disk = SimDisk(durable=False)
    store = disk.open()
    append(store, G, make_entries(1, 11, term=1))
    meta = SnapshotMetadata(index=6, term=1)
    store.snapshots.write_bytes(G, meta, b"state at 6")
    commit(store, ("record_snapshot", G, meta))
    store.sync()

    # act
    store.compact(G, 6)
    store.sync()
    disk.crash()
    restored = disk.open()

    # check
    assert restored.group(G).first_index() == 7
    assert log_of(restored) == make_entries(7, 11, term=1)


def test_an_unsynced_compaction_is_lost() -> None:
    # init
    disk = SimDisk(durable=False)
    store = disk.open()
    append(store, G, make_entries(1, 11, term=1))
    meta = SnapshotMetadata(index=6, term=1)
    store.snapshots.write_bytes(G, meta, b"state at 6")
    commit(store, ("record_snapshot", G, meta))
    store.sync()

    # act
    store.compact(G, 6)
    lost = disk.crash()

    # check
    assert lost == 1
    assert disk.open().group(G).first_index() == 1
