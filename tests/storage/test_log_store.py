"""Every operation of the log store, on both backends, and restart recovery on LMDB."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from copycat.errors import ClosedError, CompactedError, StorageError, UnavailableError
from copycat.raft import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    LogReader,
    Snapshot,
    SnapshotMetadata,
)
from copycat.storage import (
    MAX_GROUP_META_BYTES,
    LmdbLogStore,
    LogStore,
    MemoryLogStore,
    WriteBatch,
    open_log_store,
)

from .helpers import StoreHandle, append, commit, make_entries, take_snapshot

if TYPE_CHECKING:
    from pathlib import Path

G = 7
BIG_GROUP = (1 << 128) - 1  # a ULID-sized id


def log_of(store: LogStore, group: int = G) -> list[Entry]:
    log = store.group(group)
    return log.entries(log.first_index(), log.last_index() + 1)


# -- empty state and reads ----------------------------------------------------------------


def test_an_unknown_group_reads_as_empty(store: LogStore) -> None:
    log = store.group(G)
    assert log.first_index() == 1
    assert log.last_index() == 0
    assert log.term(0) == 0
    assert log.initial_state() == (HardState(), ConfState())
    assert log.snapshot() == Snapshot()
    assert log.entries(1, 1) == []
    with pytest.raises(UnavailableError):
        log.entries(1, 2)
    with pytest.raises(UnavailableError):
        log.term(1)
    assert store.groups() == []


def test_group_log_is_a_log_reader(store: LogStore) -> None:
    reader: LogReader = store.group(G)
    assert reader.last_index() == 0


def test_append_then_read(store: LogStore) -> None:
    written = [
        *make_entries(1, 4, term=1),
        Entry(term=2, index=4, kind=EntryKind.CONF_CHANGE, data=b"cc"),
    ]
    append(store, G, written)
    log = store.group(G)
    assert log.first_index() == 1
    assert log.last_index() == 4
    assert log.entries(1, 5) == written
    assert log.entries(2, 4) == written[1:3]
    assert [log.term(i) for i in range(5)] == [0, 1, 1, 1, 2]
    assert log.entries(4, 5)[0].kind is EntryKind.CONF_CHANGE
    assert store.groups() == [G]


def test_entries_are_bounded_by_bytes_but_never_empty(store: LogStore) -> None:
    append(
        store, G, [Entry(term=1, index=i, data=b"x" * 84) for i in range(1, 11)]
    )  # 100 bytes each
    log = store.group(G)
    assert len(log.entries(1, 11, max_bytes=0)) == 1
    assert len(log.entries(1, 11, max_bytes=99)) == 1
    assert len(log.entries(1, 11, max_bytes=100)) == 1
    assert len(log.entries(1, 11, max_bytes=299)) == 2
    assert len(log.entries(1, 11, max_bytes=300)) == 3
    assert len(log.entries(1, 11, max_bytes=10_000)) == 10
    assert len(log.entries(1, 11, max_bytes=None)) == 10


def test_reads_past_the_end_are_unavailable(store: LogStore) -> None:
    append(store, G, make_entries(1, 4, term=1))
    log = store.group(G)
    with pytest.raises(UnavailableError) as info:
        log.entries(2, 6)
    assert info.value.last_index == 3
    with pytest.raises(UnavailableError):
        log.term(4)


# -- appends ---------------------------------------------------------------------------------


def test_append_replaces_a_conflicting_suffix(handle: StoreHandle) -> None:
    store = handle.store
    append(store, G, make_entries(1, 11, term=1))
    append(store, G, make_entries(6, 8, term=2, tag=b"new"))
    log = store.group(G)
    assert log.last_index() == 7
    assert log.entries(1, 8) == make_entries(1, 6, term=1) + make_entries(6, 8, term=2, tag=b"new")
    assert [log.term(i) for i in range(1, 8)] == [1, 1, 1, 1, 1, 2, 2]
    with pytest.raises(UnavailableError):
        log.entries(8, 9)
    store = handle.reopen()
    assert log_of(store) == make_entries(1, 6, term=1) + make_entries(6, 8, term=2, tag=b"new")
    assert store.group(G).term(7) == 2


def test_append_may_replace_the_whole_log(store: LogStore) -> None:
    append(store, G, make_entries(1, 6, term=1))
    append(store, G, make_entries(1, 3, term=3, tag=b"r"))
    assert log_of(store) == make_entries(1, 3, term=3, tag=b"r")
    assert store.group(G).term(2) == 3


def test_append_of_several_terms_in_one_batch(store: LogStore) -> None:
    written = make_entries(1, 3, term=1) + make_entries(3, 6, term=4) + make_entries(6, 7, term=5)
    append(store, G, written)
    log = store.group(G)
    assert [log.term(i) for i in range(1, 7)] == [1, 1, 4, 4, 4, 5]
    append(store, G, make_entries(4, 5, term=6))
    assert [log.term(i) for i in range(1, 5)] == [1, 1, 4, 6]


def test_append_with_a_gap_fails_and_the_whole_batch_is_dropped(store: LogStore) -> None:
    append(store, G, make_entries(1, 3, term=1))
    batch = WriteBatch()
    batch.append(G + 1, make_entries(1, 5, term=1))
    batch.set_hard_state(G, HardState(term=9, vote=1, commit=2))
    batch.append(G, make_entries(5, 6, term=1))  # index 3 and 4 are missing
    with pytest.raises(UnavailableError):
        store.commit(batch)
    assert store.groups() == [G]
    assert store.group(G + 1).last_index() == 0
    assert store.group(G).initial_state()[0] == HardState()
    assert store.group(G).last_index() == 2


def test_entries_must_be_contiguous(store: LogStore) -> None:
    broken = [Entry(term=1, index=1), Entry(term=1, index=3)]
    with pytest.raises(ValueError, match="contiguous"):
        append(store, G, broken)
    skipping = [Entry(term=1, index=1), Entry(term=1, index=3), Entry(term=1, index=3)]
    with pytest.raises(ValueError, match="contiguous"):
        append(store, G, skipping)
    assert store.group(G).last_index() == 0


def test_terms_may_not_decrease_within_an_append(store: LogStore) -> None:
    with pytest.raises(ValueError, match="never decrease"):
        append(store, G, [Entry(term=2, index=1), Entry(term=1, index=2), Entry(term=3, index=3)])
    assert store.group(G).last_index() == 0


def test_append_ignores_entries_already_compacted(store: LogStore) -> None:
    append(store, G, make_entries(1, 11, term=1))
    take_snapshot(store, G, 5)
    store.compact(G, 5)
    append(store, G, make_entries(3, 8, term=1))  # 3..5 are compacted, 6..7 replace
    log = store.group(G)
    assert log.first_index() == 6
    assert log.last_index() == 7
    append(store, G, make_entries(1, 4, term=1))  # all compacted: nothing happens
    assert log.last_index() == 7


def test_several_appends_to_one_group_in_one_batch(store: LogStore) -> None:
    batch = WriteBatch()
    batch.append(G, make_entries(1, 6, term=1))
    batch.append(G, make_entries(6, 8, term=1))
    batch.append(G, make_entries(4, 5, term=2, tag=b"z"))
    store.commit(batch)
    assert log_of(store) == make_entries(1, 4, term=1) + make_entries(4, 5, term=2, tag=b"z")


# -- hard state and membership ------------------------------------------------------------------


def test_hard_state_and_conf_state(handle: StoreHandle) -> None:
    store = handle.store
    conf = ConfState(
        voters=frozenset({1, 2, 3}),
        learners=frozenset({4}),
        voters_outgoing=frozenset({1, 2, 5}),
        learners_next=frozenset({5}),
        auto_leave=True,
    )
    commit(
        store,
        ("set_hard_state", G, HardState(term=3, vote=2, commit=10)),
        ("set_conf_state", G, conf),
    )
    assert store.group(G).initial_state() == (HardState(term=3, vote=2, commit=10), conf)
    assert store.group(G).hard_state == HardState(term=3, vote=2, commit=10)
    commit(store, ("set_hard_state", G, HardState(term=4, vote=0, commit=11)))
    store = handle.reopen()
    assert store.group(G).initial_state() == (HardState(term=4, vote=0, commit=11), conf)
    assert store.groups() == [G]


def test_group_metadata_is_kept_replaced_and_recovered(handle: StoreHandle) -> None:
    store = handle.store
    assert store.group(G).meta() is None
    commit(store, ("set_meta", G, b"rule-1"))
    assert store.group(G).meta() == b"rule-1"
    assert store.groups() == [G]  # a group with only metadata is a stored group
    append(store, G, make_entries(1, 4, term=1))
    commit(store, ("set_meta", G, b"rule-2"), ("set_meta", 9, b"other"))
    store = handle.reopen()
    assert store.group(G).meta() == b"rule-2"
    assert store.group(9).meta() == b"other"
    assert log_of(store) == make_entries(1, 4, term=1)


def test_group_metadata_survives_snapshots_and_goes_with_the_group(handle: StoreHandle) -> None:
    store = handle.store
    append(store, G, make_entries(1, 6, term=1))
    commit(store, ("set_meta", G, b"rule"))
    take_snapshot(store, G, 4)
    store.compact(G, 4)
    assert store.group(G).meta() == b"rule"
    store.delete_group(G)
    assert store.group(G).meta() is None
    store = handle.reopen()
    assert store.group(G).meta() is None
    assert store.groups() == []


def test_group_metadata_is_bounded_bytes() -> None:
    batch = WriteBatch()
    with pytest.raises(ValueError, match="exceeds"):
        batch.set_meta(G, b"x" * (MAX_GROUP_META_BYTES + 1))
    with pytest.raises(TypeError):
        batch.set_meta(G, "text")  # type: ignore[arg-type]
    assert not batch


def test_the_last_hard_state_of_a_batch_wins(store: LogStore) -> None:
    commit(
        store,
        ("set_hard_state", G, HardState(term=1, vote=1, commit=0)),
        ("set_hard_state", G, HardState(term=2, vote=3, commit=1)),
    )
    assert store.group(G).initial_state()[0] == HardState(term=2, vote=3, commit=1)


# -- snapshots and compaction -------------------------------------------------------------------


def test_record_snapshot_then_compact(handle: StoreHandle) -> None:
    store = handle.store
    append(store, G, make_entries(1, 11, term=1) + make_entries(11, 21, term=2))
    meta = take_snapshot(store, G, 15, b"fifteen")
    assert store.group(G).snapshot() == Snapshot(metadata=meta, data=b"fifteen")
    assert store.group(G).first_index() == 1  # recording a snapshot keeps the log
    store.compact(G, 12)
    log = store.group(G)
    assert log.first_index() == 13
    assert log.last_index() == 20
    assert log.term(12) == 2  # the compaction point still answers
    with pytest.raises(CompactedError) as info:
        log.term(11)
    assert info.value.first_index == 13
    with pytest.raises(CompactedError):
        log.entries(12, 14)
    with pytest.raises(CompactedError):
        log.entries(5, 20)
    assert log.entries(13, 21) == make_entries(13, 21, term=2)
    store = handle.reopen()
    log = store.group(G)
    assert (log.first_index(), log.last_index(), log.term(12)) == (13, 20, 2)
    assert log.entries(13, 21) == make_entries(13, 21, term=2)
    with pytest.raises(CompactedError):
        log.entries(12, 13)
    assert log.snapshot() == Snapshot(metadata=meta, data=b"fifteen")


def test_compact_up_to_the_snapshot_and_append_after(store: LogStore) -> None:
    append(store, G, make_entries(1, 6, term=1))
    take_snapshot(store, G, 5)
    store.compact(G, 5)
    log = store.group(G)
    assert (log.first_index(), log.last_index(), log.term(5)) == (6, 5, 1)
    assert log.entries(6, 6) == []
    append(store, G, make_entries(6, 8, term=2))
    assert log.entries(6, 8) == make_entries(6, 8, term=2)


def test_compact_is_idempotent_and_bounded_by_the_snapshot(store: LogStore) -> None:
    append(store, G, make_entries(1, 11, term=1))
    with pytest.raises(ValueError, match="take a snapshot first"):
        store.compact(G, 3)
    take_snapshot(store, G, 6)
    store.compact(G, 4)
    store.compact(G, 2)  # already compacted past 2: nothing to do
    assert store.group(G).first_index() == 5
    with pytest.raises(ValueError, match="take a snapshot first"):
        store.compact(G, 7)
    assert store.group(G).first_index() == 5


def test_record_snapshot_rules(store: LogStore) -> None:
    append(store, G, make_entries(1, 6, term=2))
    missing = SnapshotMetadata(index=3, term=2)
    with pytest.raises(ValueError, match="no snapshot data"):
        commit(store, ("record_snapshot", G, missing))
    wrong_term = SnapshotMetadata(index=3, term=1)
    store.snapshots.write_bytes(G, wrong_term, b"x")
    with pytest.raises(ValueError, match="claims term 1"):
        commit(store, ("record_snapshot", G, wrong_term))
    beyond = SnapshotMetadata(index=9, term=2)
    store.snapshots.write_bytes(G, beyond, b"x")
    with pytest.raises(UnavailableError):
        commit(store, ("record_snapshot", G, beyond))
    other_conf = SnapshotMetadata(index=3, term=2, conf_state=ConfState(voters=frozenset({1})))
    store.snapshots.write_bytes(G, SnapshotMetadata(index=3, term=2), b"x")
    with pytest.raises(ValueError, match="differs"):
        commit(store, ("record_snapshot", G, other_conf))
    assert store.group(G).snapshot_metadata() == SnapshotMetadata()
    ok = take_snapshot(store, G, 4)
    older = SnapshotMetadata(index=2, term=2)
    commit(store, ("record_snapshot", G, older))  # older than the current: ignored
    assert store.group(G).snapshot_metadata() == ok


def test_install_snapshot_replaces_the_log_and_membership(handle: StoreHandle) -> None:
    store = handle.store
    append(store, G, make_entries(1, 11, term=1))
    commit(store, ("set_conf_state", G, ConfState(voters=frozenset({1}))))
    conf = ConfState(voters=frozenset({1, 2, 3}))
    meta = SnapshotMetadata(index=50, term=4, conf_state=conf)
    store.snapshots.write(G, meta, [b"a" * 10, b"b" * 5])
    commit(
        store,
        ("install_snapshot", G, meta),
        ("append", G, make_entries(51, 53, term=4)),
        ("set_hard_state", G, HardState(term=4, vote=0, commit=50)),
    )
    log = store.group(G)
    assert (log.first_index(), log.last_index(), log.term(50), log.term(52)) == (51, 52, 4, 4)
    assert log.initial_state() == (HardState(term=4, vote=0, commit=50), conf)
    assert log.snapshot() == Snapshot(metadata=meta, data=b"a" * 10 + b"b" * 5)
    with pytest.raises(CompactedError):
        log.entries(10, 12)
    store = handle.reopen()
    log = store.group(G)
    assert (log.first_index(), log.last_index(), log.term(50), log.term(52)) == (51, 52, 4, 4)
    assert log.initial_state() == (HardState(term=4, vote=0, commit=50), conf)
    assert log.entries(51, 53) == make_entries(51, 53, term=4)
    assert log.snapshot() == Snapshot(metadata=meta, data=b"a" * 10 + b"b" * 5)


def test_install_snapshot_discards_entries_past_it(store: LogStore) -> None:
    append(store, G, make_entries(1, 21, term=1))
    meta = SnapshotMetadata(index=10, term=3)
    store.snapshots.write_bytes(G, meta, b"s")
    commit(store, ("install_snapshot", G, meta))
    log = store.group(G)
    assert (log.first_index(), log.last_index(), log.term(10)) == (11, 10, 3)


def test_an_older_snapshot_install_is_ignored(store: LogStore) -> None:
    newer = SnapshotMetadata(index=10, term=3)
    older = SnapshotMetadata(index=5, term=2)
    store.snapshots.write_bytes(G, newer, b"n")
    store.snapshots.write_bytes(G, older, b"o")
    commit(store, ("install_snapshot", G, newer))
    commit(store, ("install_snapshot", G, older))
    assert store.group(G).snapshot() == Snapshot(metadata=newer, data=b"n")


def test_snapshot_retention_keeps_the_current_one_and_newer(store: LogStore) -> None:
    append(store, G, make_entries(1, 11, term=1))
    for index in (1, 2):  # nothing recorded yet: nothing is removed
        store.snapshots.write_bytes(G, SnapshotMetadata(index=index, term=1), b"x")
    current = take_snapshot(store, G, 3, b"three")
    assert [m.index for m in store.snapshots.list(G)] == [3, 2]  # the newest two
    for index in (4, 6, 8):  # written, not recorded yet: kept, as are all newer ones
        store.snapshots.write_bytes(G, SnapshotMetadata(index=index, term=1), b"x")
    assert [m.index for m in store.snapshots.list(G)] == [8, 6, 4, 3]
    assert store.group(G).snapshot() == Snapshot(metadata=current, data=b"three")
    take_snapshot(store, G, 7)
    assert [m.index for m in store.snapshots.list(G)] == [8, 7]
    # an older snapshot written late (a slow install) is kept until the next prune
    store.snapshots.write_bytes(G, SnapshotMetadata(index=5, term=1), b"late")
    assert store.snapshots.read_bytes(G, 5, 1) == b"late"
    take_snapshot(store, G, 9)
    assert [m.index for m in store.snapshots.list(G)] == [9, 8]


# -- groups -------------------------------------------------------------------------------------


def test_one_batch_for_many_groups(handle: StoreHandle) -> None:
    store = handle.store
    groups = [3, 1, 1 << 70, BIG_GROUP, 2, 0]
    batch = WriteBatch()
    for n, gid in enumerate(groups):
        batch.append(gid, make_entries(1, 2 + n, term=1, tag=b"g%d-" % gid))
        batch.set_hard_state(gid, HardState(term=1, vote=0, commit=n))
    store.commit(batch)
    for _ in range(2):
        assert store.groups() == sorted(groups)
        for n, gid in enumerate(groups):
            log = store.group(gid)
            assert log.entries(1, 2 + n) == make_entries(1, 2 + n, term=1, tag=b"g%d-" % gid)
            assert log.initial_state()[0].commit == n
        store = handle.reopen()


def test_group_ids_are_unsigned_128_bit(store: LogStore) -> None:
    with pytest.raises(ValueError, match="128-bit"):
        store.group(-1)
    with pytest.raises(ValueError, match="128-bit"):
        append(store, 1 << 128, make_entries(1, 2, term=1))


def test_delete_group(handle: StoreHandle) -> None:
    store = handle.store
    for gid in (1, 2, 3):
        append(store, gid, make_entries(1, 6, term=1, tag=b"%d" % gid))
        commit(store, ("set_hard_state", gid, HardState(term=1, vote=1, commit=5)))
        commit(store, ("set_conf_state", gid, ConfState(voters=frozenset({1}))))
        take_snapshot(store, gid, 3)
    store.delete_group(2)
    assert store.groups() == [1, 3]
    assert store.snapshots.list(2) == []
    log = store.group(2)
    assert (log.first_index(), log.last_index()) == (1, 0)
    assert log.initial_state() == (HardState(), ConfState())
    assert log.snapshot() == Snapshot()
    store = handle.reopen()
    assert store.groups() == [1, 3]
    assert store.group(2).last_index() == 0
    assert log_of(store, 1) == make_entries(1, 6, term=1, tag=b"1")
    assert log_of(store, 3) == make_entries(1, 6, term=1, tag=b"3")
    append(store, 2, make_entries(1, 3, term=7))  # a deleted id may be used again
    assert log_of(store, 2) == make_entries(1, 3, term=7)


def test_delete_and_recreate_in_one_batch(store: LogStore) -> None:
    append(store, G, make_entries(1, 6, term=1))
    commit(store, ("delete_group", G, None), ("append", G, make_entries(1, 2, term=5)))
    assert log_of(store) == make_entries(1, 2, term=5)


def test_reader_follows_the_group_through_deletion(store: LogStore) -> None:
    log = store.group(G)
    append(store, G, make_entries(1, 4, term=1))
    assert log.last_index() == 3
    store.delete_group(G)
    assert log.last_index() == 0


# -- lifecycle ----------------------------------------------------------------------------------


def test_closed_store_refuses_use(store: LogStore) -> None:
    append(store, G, make_entries(1, 2, term=1))
    log = store.group(G)
    store.close()
    store.close()  # twice is fine
    assert store.closed
    with pytest.raises(ClosedError):
        log.last_index()
    with pytest.raises(ClosedError):
        append(store, G, make_entries(2, 3, term=1))


def test_empty_batch_is_a_no_op(store: LogStore) -> None:
    store.commit(WriteBatch())
    assert store.groups() == []


def test_open_log_store_picks_the_backend(tmp_path: Path) -> None:
    with open_log_store(tmp_path / "a") as lmdb_store:  # type: ignore[attr-defined]
        assert isinstance(lmdb_store, LmdbLogStore)
    memory = open_log_store(None, backend="memory")
    assert isinstance(memory, MemoryLogStore)
    with pytest.raises(ValueError, match="backend"):
        open_log_store(tmp_path, backend="rocks")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data_dir"):
        open_log_store(None)


# -- LMDB only -------------------------------------------------------------------------------


def test_a_data_dir_is_opened_by_one_store_at_a_time(tmp_path: Path) -> None:
    first = LmdbLogStore(tmp_path)
    with pytest.raises(StorageError, match="in use"):
        LmdbLogStore(tmp_path)
    first.close()
    LmdbLogStore(tmp_path).close()


def test_restart_recovers_every_kind_of_state(tmp_path: Path) -> None:
    store = LmdbLogStore(tmp_path)
    conf = ConfState(voters=frozenset({1, 2}), learners=frozenset({3}))
    for gid in range(1, 30):
        append(
            store, gid, make_entries(1, 10 + gid, term=1) + make_entries(10 + gid, 12 + gid, term=2)
        )
        commit(store, ("set_hard_state", gid, HardState(term=2, vote=gid % 3, commit=5 + gid)))
        if gid % 2:
            commit(store, ("set_conf_state", gid, conf))
        if gid % 4 == 0:
            commit(store, ("set_meta", gid, b"meta%d" % gid))
        if gid % 3 == 0:
            take_snapshot(store, gid, 5 + gid, b"snap%d" % gid)
            store.compact(gid, 3 + gid)
        if gid % 5 == 0:
            store.delete_group(gid)
    expected = {}
    for gid in store.groups():
        log = store.group(gid)
        expected[gid] = (
            log.first_index(),
            log.last_index(),
            log.term(log.first_index() - 1),
            log.term(log.last_index()),
            log.initial_state(),
            log.snapshot(),
            log.entries(log.first_index(), log.last_index() + 1),
            log.meta(),
        )
    store.close()
    store = LmdbLogStore(tmp_path)
    assert store.groups() == sorted(expected)
    for gid, want in expected.items():
        log = store.group(gid)
        assert (
            log.first_index(),
            log.last_index(),
            log.term(log.first_index() - 1),
            log.term(log.last_index()),
            log.initial_state(),
            log.snapshot(),
            log.entries(log.first_index(), log.last_index() + 1),
            log.meta(),
        ) == want
    store.close()


def test_not_durable_mode_keeps_data_across_a_clean_close(tmp_path: Path) -> None:
    store = LmdbLogStore(tmp_path, durable=False)
    append(store, G, make_entries(1, 100, term=1))
    store.sync()
    append(store, G, make_entries(100, 200, term=1))
    store.close()
    store = LmdbLogStore(tmp_path)
    assert log_of(store) == make_entries(1, 200, term=1)
    store.close()


def test_a_full_map_grows(tmp_path: Path) -> None:
    store = LmdbLogStore(tmp_path, map_size_bytes=1 << 20)
    big = [Entry(term=1, index=i, data=b"%d" % i * 4000) for i in range(1, 1001)]  # ~4 MB
    append(store, G, big)
    assert log_of(store) == big
    store.close()
    store = LmdbLogStore(tmp_path, map_size_bytes=1 << 20)
    assert log_of(store) == big
    store.close()


def test_large_entries_and_batches(tmp_path: Path) -> None:
    store = LmdbLogStore(tmp_path)
    written = [Entry(term=1, index=1, data=b"x" * (3 << 20)), *make_entries(2, 5000, term=1)]
    append(store, G, written)
    assert log_of(store) == written
    store.close()
