"""The core's view of the log (`RaftLog`, `_log.py`) and the in-memory `LogReader`
(`MemoryLog`, `limit_size`, `bootstrap_entries`, `_storage.py`).

Table tests follow etcd's log_test.go and storage_test.go; hypothesis compares
`MemoryLog` and `RaftLog.slice` with plain lists."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copycat.errors import CompactedError, InternalError, UnavailableError
from copycat.raft import (
    ENTRY_OVERHEAD_BYTES,
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryLog,
    Snapshot,
    SnapshotMetadata,
    add_voter,
    bootstrap_entries,
    entry_size,
    limit_size,
)
from copycat.raft._log import RaftLog

NO_LIMIT = 1 << 40


def ents(start: int, *terms: int, size: int = 0) -> list[Entry]:
    """Entries from index `start` with the given terms (and `size` bytes of data each)."""
    return [
        Entry(term=t, index=i, data=bytes([i % 256]) * size)
        for i, t in enumerate(terms, start=start)
    ]


def snap(index: int, term: int, voters: frozenset[int] = frozenset({1})) -> Snapshot:
    return Snapshot(
        metadata=SnapshotMetadata(index=index, term=term, conf_state=ConfState(voters=voters)),
        data=b"state",
    )


def memory_log(entries: list[Entry], snapshot: Snapshot | None = None) -> MemoryLog:
    storage = MemoryLog()
    if snapshot is not None:
        storage.apply_snapshot(snapshot)
    storage.append(entries)
    return storage


def raft_log(
    entries: list[Entry],
    snapshot: Snapshot | None = None,
    max_committed_bytes: int = NO_LIMIT,
) -> RaftLog:
    return RaftLog(memory_log(entries, snapshot), max_committed_bytes)


def terms_of(log: RaftLog) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in log.all_entries()]


# -- RaftLog: construction, indexes, terms ------------------------------------------------


def test_new_log_over_empty_storage() -> None:
    log = raft_log([])
    assert (log.first_index(), log.last_index(), log.committed, log.applied) == (1, 0, 0, 0)
    assert log.term(0) == 0
    assert log.last_term() == 0


def test_new_log_over_snapshot_starts_committed_and_applied_at_it() -> None:
    log = raft_log(ents(11, 3, 3), snap(10, 3))
    assert (log.first_index(), log.last_index()) == (11, 12)
    assert (log.committed, log.applied) == (10, 10)


def test_term_across_compaction() -> None:
    log = raft_log(ents(11, 3, 4, 4), snap(10, 3))
    with pytest.raises(CompactedError) as compacted:
        log.term(9)
    assert compacted.value.first_index == 11
    assert log.term(10) == 3  # the snapshot's own index answers with its term
    assert [log.term(i) for i in (11, 12, 13)] == [3, 4, 4]
    with pytest.raises(UnavailableError) as unavailable:
        log.term(14)
    assert unavailable.value.last_index == 13
    assert log.term_or_zero(9) == 0
    assert log.term_or_zero(14) == 0
    log.append(ents(14, 5))  # unstable entries answer too
    assert log.term(14) == 5
    with pytest.raises(UnavailableError):
        log.term(15)


@pytest.mark.parametrize(
    ("last_index", "last_term", "want"),
    [
        (2, 2, False),  # lower last term
        (3, 2, False),
        (4, 2, False),
        (2, 3, False),  # same term, shorter
        (3, 3, True),  # same term, same length
        (4, 3, True),
        (1, 4, True),  # higher last term wins however short
    ],
)
def test_is_up_to_date(last_index: int, last_term: int, want: bool) -> None:
    log = raft_log(ents(1, 1, 2, 3))
    assert log.is_up_to_date(last_index, last_term) is want


# -- RaftLog: appending -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("appended", "want_last", "want_offset", "want_log"),
    [
        ([], 2, 3, [(1, 1), (2, 2)]),
        (ents(3, 2), 3, 3, [(1, 1), (2, 2), (3, 2)]),
        # Conflicts with index 1: the whole durable log is replaced.
        (ents(1, 2), 1, 1, [(1, 2)]),
        # Conflicts with index 2: the durable suffix is replaced.
        (ents(2, 3, 3), 3, 2, [(1, 1), (2, 3), (3, 3)]),
    ],
)
def test_append_with_conflicting_suffix(
    appended: list[Entry], want_last: int, want_offset: int, want_log: list[tuple[int, int]]
) -> None:
    log = raft_log(ents(1, 1, 2))
    assert log.append(appended) == want_last
    assert log.unstable_offset == want_offset
    assert terms_of(log) == want_log


def test_append_truncates_an_unstable_suffix() -> None:
    log = raft_log(ents(1, 1))
    log.append(ents(2, 1, 1, 1))
    log.append(ents(3, 2))
    assert terms_of(log) == [(1, 1), (2, 1), (3, 2)]
    assert log.unstable_offset == 2


def test_append_over_committed_entries_raises() -> None:
    log = raft_log(ents(1, 1, 1, 1))
    log.commit_to(2)
    with pytest.raises(InternalError):
        log.append(ents(2, 2))
    assert terms_of(log) == [(1, 1), (2, 1), (3, 1)]
    log.append(ents(3, 2))  # right after the commit index is fine
    assert terms_of(log) == [(1, 1), (2, 1), (3, 2)]


# previous log [1:1, 2:2, 3:3], committed 1 (etcd TestLogMaybeAppend)
@pytest.mark.parametrize(
    ("prev_index", "prev_term", "commit", "entries", "want", "want_commit", "want_log"),
    [
        # mismatch: wrong term, or past the end
        (3, 2, 3, ents(4, 4), None, 1, [1, 2, 3]),
        (4, 3, 3, ents(5, 4), None, 1, [1, 2, 3]),
        # match, no entries: commit moves, bounded by the last new index
        (3, 3, 3, [], 3, 3, [1, 2, 3]),
        (3, 3, 4, [], 3, 3, [1, 2, 3]),
        (3, 3, 2, [], 3, 2, [1, 2, 3]),
        (3, 3, 0, [], 3, 1, [1, 2, 3]),  # commit never moves back
        (0, 0, 3, [], 0, 1, [1, 2, 3]),  # last new index is 0
        (2, 2, 3, [], 2, 2, [1, 2, 3]),  # bounded by prev_index, not our last index
        # match with new entries
        (3, 3, 3, ents(4, 4), 4, 3, [1, 2, 3, 4]),
        (3, 3, 4, ents(4, 4), 4, 4, [1, 2, 3, 4]),
        (3, 3, 5, ents(4, 4), 4, 4, [1, 2, 3, 4]),
        (3, 3, 5, ents(4, 4, 4), 5, 5, [1, 2, 3, 4, 4]),
        # entries that are already there change nothing
        (1, 1, 3, ents(2, 2), 2, 2, [1, 2, 3]),
        # conflicts after the commit index replace the suffix
        (2, 2, 3, ents(3, 4), 3, 3, [1, 2, 4]),
        (1, 1, 3, ents(2, 4), 2, 2, [1, 4]),
        (1, 1, 3, ents(2, 4, 4), 3, 3, [1, 4, 4]),
    ],
)
def test_maybe_append(
    prev_index: int,
    prev_term: int,
    commit: int,
    entries: list[Entry],
    want: int | None,
    want_commit: int,
    want_log: list[int],
) -> None:
    log = raft_log(ents(1, 1, 2, 3))
    log.commit_to(1)
    assert log.maybe_append(prev_index, prev_term, commit, entries) == want
    assert log.committed == want_commit
    assert [t for _, t in terms_of(log)] == want_log


def test_maybe_append_conflicting_with_committed_entry_raises() -> None:
    log = raft_log(ents(1, 1, 2, 3))
    log.commit_to(1)
    with pytest.raises(InternalError, match="committed"):
        log.maybe_append(0, 0, 3, ents(1, 4))
    log.commit_to(2)
    with pytest.raises(InternalError):
        log.maybe_append(1, 1, 3, ents(2, 4))


@pytest.mark.parametrize(
    ("entries", "want"),
    [
        ([], 0),
        (ents(1, 1, 2, 3), 0),
        (ents(2, 2, 3), 0),
        (ents(3, 3), 0),
        (ents(1, 1, 2, 3, 4, 4), 4),  # new entries
        (ents(2, 2, 3, 4, 4), 4),
        (ents(3, 3, 4, 4), 4),
        (ents(4, 4, 4), 4),
        (ents(1, 4, 4), 1),  # conflicts
        (ents(2, 1, 4, 4), 2),
        (ents(3, 1, 2, 4, 4), 3),
    ],
)
def test_find_conflict(entries: list[Entry], want: int) -> None:
    assert raft_log(ents(1, 1, 2, 3)).find_conflict(entries) == want


@pytest.mark.parametrize(
    ("index", "term", "want"),
    [
        (100, 2, (100, 0)),  # unavailable: assume a possible match
        (5, 6, (5, 5)),
        (5, 5, (5, 5)),
        (5, 4, (2, 2)),
        (5, 2, (2, 2)),
        (5, 1, (0, 0)),
        (1, 2, (1, 2)),
        (1, 1, (0, 0)),
        (0, 0, (0, 0)),
    ],
)
def test_find_conflict_by_term(index: int, term: int, want: tuple[int, int]) -> None:
    assert raft_log(ents(1, 2, 2, 5, 5, 5)).find_conflict_by_term(index, term) == want


@pytest.mark.parametrize(
    ("index", "term", "want"),
    [
        (30, 3, (30, 0)),
        (14, 9, (14, 4)),
        (14, 4, (14, 4)),
        (14, 3, (12, 3)),
        (14, 2, (9, 0)),  # past the snapshot: compacted, term unknown
        (11, 5, (11, 3)),
        (10, 5, (10, 3)),
        (10, 3, (10, 3)),
        (10, 2, (9, 0)),
        (9, 2, (9, 0)),
        (4, 2, (4, 0)),
        (0, 0, (0, 0)),
    ],
)
def test_find_conflict_by_term_over_compacted_log(
    index: int, term: int, want: tuple[int, int]
) -> None:
    log = raft_log(ents(11, 3, 3, 4, 4), snap(10, 3))
    assert log.find_conflict_by_term(index, term) == want


# -- RaftLog: reading ---------------------------------------------------------------------

SIZE = 100 + ENTRY_OVERHEAD_BYTES


def split_log() -> RaftLog:
    """Entries 1-3 durable, 4-6 unstable, 100 bytes of data each."""
    log = raft_log(ents(1, 1, 1, 1, size=100))
    log.append(ents(4, 2, 2, 2, size=100))
    return log


@pytest.mark.parametrize(
    ("lo", "hi", "max_bytes", "want"),
    [
        (1, 7, None, [1, 2, 3, 4, 5, 6]),
        (1, 7, 0, [1]),  # always at least one entry
        (1, 7, SIZE - 1, [1]),
        (1, 7, SIZE, [1]),
        (1, 7, 2 * SIZE - 1, [1]),
        (1, 7, 2 * SIZE, [1, 2]),
        (1, 7, 3 * SIZE, [1, 2, 3]),  # all of storage, none of the unstable part
        (1, 7, 4 * SIZE, [1, 2, 3, 4]),  # across the boundary
        (2, 6, 10 * SIZE, [2, 3, 4, 5]),
        (4, 7, 0, [4]),
        (5, 7, 2 * SIZE, [5, 6]),
        (3, 3, None, []),
        (7, 7, None, []),
    ],
)
def test_slice_with_byte_limits(lo: int, hi: int, max_bytes: int | None, want: list[int]) -> None:
    got = split_log().slice(lo, hi, max_bytes)
    assert [e.index for e in got] == want


def test_slice_out_of_range() -> None:
    log = raft_log(ents(11, 3, 3), snap(10, 3))
    with pytest.raises(CompactedError):
        log.slice(10, 12, None)
    with pytest.raises(UnavailableError):
        log.slice(11, 14, None)
    assert log.entries_from(13, None) == []
    assert [e.index for e in log.entries_from(11, None)] == [11, 12]


def test_slice_skips_durable_entries_replaced_by_unstable_ones() -> None:
    log = raft_log(ents(1, 1, 1, 1, 1))
    log.append(ents(3, 2))
    assert [(e.index, e.term) for e in log.slice(1, 4, None)] == [(1, 1), (2, 1), (3, 2)]
    with pytest.raises(UnavailableError):
        log.slice(1, 5, None)  # the durable entry 4 was replaced away


@settings(max_examples=200, deadline=None)
@given(
    durable=st.lists(st.tuples(st.integers(1, 3), st.sampled_from([0, 4, 34])), max_size=8),
    unstable_at=st.integers(1, 10),
    unstable=st.lists(st.tuples(st.integers(4, 6), st.sampled_from([0, 4, 34])), max_size=6),
    data=st.data(),
)
def test_slice_matches_a_plain_list(
    durable: list[tuple[int, int]],
    unstable_at: int,
    unstable: list[tuple[int, int]],
    data: st.DataObject,
) -> None:
    model = [Entry(term=t, index=i, data=b"x" * n) for i, (t, n) in enumerate(durable, start=1)]
    log = RaftLog(memory_log(model), NO_LIMIT)
    start = min(unstable_at, len(model) + 1)
    suffix = [Entry(term=t, index=i, data=b"y" * n) for i, (t, n) in enumerate(unstable, start)]
    log.append(suffix)
    if suffix:
        model = model[: start - 1] + suffix
    assert log.last_index() == len(model)
    assert [log.term(e.index) for e in model] == [e.term for e in model]

    lo = data.draw(st.integers(1, len(model) + 1), label="lo")
    hi = data.draw(st.integers(lo, len(model) + 2), label="hi")
    if hi > len(model) + 1:
        with pytest.raises(UnavailableError):
            log.slice(lo, hi, None)
        return
    want = model[lo - 1 : hi - 1]
    # A limit at the size of some prefix is where off-by-one errors show.
    prefix_sizes = [sum(entry_size(e) for e in want[:k]) for k in range(len(want) + 1)]
    max_bytes = data.draw(
        st.one_of(st.none(), st.sampled_from(prefix_sizes), st.integers(0, 200)), label="max_bytes"
    )
    if max_bytes is not None and want:
        n, total = 1, entry_size(want[0])
        while n < len(want) and total + entry_size(want[n]) <= max_bytes:
            total += entry_size(want[n])
            n += 1
        want = want[:n]
    assert log.slice(lo, hi, max_bytes) == want


# -- RaftLog: persistence -----------------------------------------------------------------


def test_stable_to_drops_persisted_unstable_entries() -> None:
    log = raft_log([])
    log.append(ents(1, 1, 2))
    log.stable_to(1, 1)
    assert (log.unstable_offset, len(log.unstable_entries)) == (2, 1)
    log.stable_to(2, 2)
    assert (log.unstable_offset, len(log.unstable_entries)) == (3, 0)


@pytest.mark.parametrize(
    ("index", "term"),
    [
        (2, 1),  # stale term: the entry at 2 was replaced meanwhile
        (1, 2),  # term does not match
        (0, 0),  # before the unstable part
        (3, 2),  # past it
    ],
)
def test_stable_to_ignores_stale_or_unknown_positions(index: int, term: int) -> None:
    log = raft_log([])
    log.append(ents(1, 1, 1))
    log.append(ents(2, 2))  # the host is persisting (2, 1); it was replaced by (2, 2)
    log.stable_to(index, term)
    assert (log.unstable_offset, [(e.index, e.term) for e in log.unstable_entries]) == (
        1,
        [(1, 1), (2, 2)],
    )


def test_stable_to_after_restore_only_touches_entries_after_the_snapshot() -> None:
    log = raft_log(ents(1, 1))
    log.restore(snap(5, 2))
    log.stable_to(5, 2)  # the snapshot index is not an unstable entry
    assert log.unstable_offset == 6
    log.append(ents(6, 2))
    log.stable_to(6, 2)
    assert (log.unstable_offset, log.unstable_entries) == (7, [])


def test_restore_replaces_the_log_with_the_snapshot() -> None:
    log = raft_log(ents(1, 1, 1, 2))
    log.commit_to(2)
    log.applied_to(1)
    s = snap(20, 4)
    log.restore(s)
    assert (log.first_index(), log.last_index(), log.last_term()) == (21, 20, 4)
    assert log.committed == 20
    assert log.snapshot() is s
    assert log.unstable_snapshot is s
    assert log.term(20) == 4
    with pytest.raises(CompactedError):
        log.term(19)
    with pytest.raises(UnavailableError):
        log.term(21)
    with pytest.raises(CompactedError):
        log.slice(3, 4, None)  # the old entries are gone, though storage still has them
    assert not log.has_next_committed()  # the state machine restores the snapshot instead
    assert log.next_committed() == []
    log.append(ents(21, 4, 5))
    assert terms_of(log) == [(21, 4), (22, 5)]
    log.stable_snapshot_to(19)  # another snapshot: ignored
    assert log.unstable_snapshot is s
    log.stable_snapshot_to(20)
    assert log.unstable_snapshot is None


# -- RaftLog: commit and apply ------------------------------------------------------------


def test_next_committed_is_bounded_by_bytes() -> None:
    log = raft_log(ents(1, 1, 1, 1, 1, 1, 1, size=100), max_committed_bytes=2 * SIZE + 10)
    assert log.next_committed() == []
    log.commit_to(6)
    batches = []
    while log.has_next_committed():
        batch = log.next_committed()
        batches.append([e.index for e in batch])
        log.applied_to(batch[-1].index)
    assert batches == [[1, 2], [3, 4], [5, 6]]
    assert log.applied == 6


def test_next_committed_hands_out_at_least_one_oversized_entry() -> None:
    log = raft_log(ents(1, 1, 1, size=1000), max_committed_bytes=10)
    log.commit_to(2)
    assert [e.index for e in log.next_committed()] == [1]


def test_next_committed_stops_at_the_commit_index() -> None:
    log = raft_log(ents(1, 1, 1, 1))
    log.commit_to(2)
    assert [e.index for e in log.next_committed()] == [1, 2]


def test_commit_to_never_moves_back_and_never_past_the_last_index() -> None:
    log = raft_log(ents(1, 1, 1))
    log.commit_to(2)
    log.commit_to(1)
    assert log.committed == 2
    with pytest.raises(InternalError):
        log.commit_to(3)
    assert log.committed == 2


def test_maybe_commit_only_commits_an_entry_of_the_given_term() -> None:
    log = raft_log(ents(1, 1, 1, 2))
    assert not log.maybe_commit(2, 2)  # entry 2 is of term 1 (Figure 8)
    assert log.committed == 0
    assert log.maybe_commit(2, 2, any_term=True)
    assert log.maybe_commit(3, 2)
    assert log.committed == 3
    assert not log.maybe_commit(3, 2)  # nothing new


def test_applied_to_must_stay_between_applied_and_committed() -> None:
    log = raft_log(ents(1, 1, 1, 1))
    log.commit_to(2)
    log.applied_to(0)  # 0 means "nothing to report"
    with pytest.raises(InternalError):
        log.applied_to(3)
    log.applied_to(2)
    with pytest.raises(InternalError):
        log.applied_to(1)
    assert log.applied == 2


# -- MemoryLog, limit_size, bootstrap_entries ---------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "max_bytes", "want"),
    [
        ([], 0, 0),
        ([], None, 0),
        ([10, 10, 10], None, 3),
        ([10, 10, 10], 0, 1),
        ([10, 10, 10], 10 + ENTRY_OVERHEAD_BYTES, 1),
        ([10, 10, 10], 2 * (10 + ENTRY_OVERHEAD_BYTES), 2),
        ([10, 10, 10], 3 * (10 + ENTRY_OVERHEAD_BYTES) - 1, 2),
        ([1000, 1, 1], 50, 1),
    ],
)
def test_limit_size(sizes: list[int], max_bytes: int | None, want: int) -> None:
    entries = [Entry(term=1, index=i, data=b"z" * n) for i, n in enumerate(sizes, start=1)]
    assert limit_size(entries, max_bytes) == entries[:want]


def test_bootstrap_entries_add_each_voter_once_in_order() -> None:
    entries = bootstrap_entries([3, 1, 2])
    assert [(e.index, e.term, e.kind) for e in entries] == [
        (1, 1, EntryKind.CONF_CHANGE),
        (2, 1, EntryKind.CONF_CHANGE),
        (3, 1, EntryKind.CONF_CHANGE),
    ]
    assert [ConfChange.decode(e.data) for e in entries] == [
        add_voter(1),
        add_voter(2),
        add_voter(3),
    ]


@pytest.mark.parametrize("voters", [[], [1, 1], [0], [2, -1], ()])
def test_bootstrap_entries_refuse_bad_voter_lists(voters: list[int]) -> None:
    with pytest.raises(ValueError, match="distinct positive"):
        bootstrap_entries(voters)


def test_memory_log_bootstrap_commits_its_first_members() -> None:
    log = MemoryLog.bootstrap([1, 2, 3])
    hard_state, conf_state = log.initial_state()
    assert hard_state == HardState(term=1, commit=3)
    assert conf_state == ConfState()  # membership comes from replaying the log
    assert (log.first_index(), log.last_index()) == (1, 3)
    assert log.entries(1, 4) == bootstrap_entries([1, 2, 3])


def test_memory_log_ranges() -> None:
    log = memory_log(ents(6, 3, 3, 4, size=100), snap(5, 3))
    assert (log.first_index(), log.last_index()) == (6, 8)
    assert log.term(5) == 3
    with pytest.raises(CompactedError):
        log.term(4)
    with pytest.raises(CompactedError):
        log.entries(5, 7)  # the snapshot index itself holds no entry
    with pytest.raises(UnavailableError):
        log.entries(6, 10)
    with pytest.raises(UnavailableError):
        log.term(9)
    assert [e.index for e in log.entries(6, 9, 0)] == [6]
    assert [e.index for e in log.entries(6, 9, 2 * SIZE)] == [6, 7]
    assert log.entries(9, 9) == []


def test_memory_log_append_replaces_a_conflicting_suffix_and_refuses_gaps() -> None:
    log = memory_log(ents(1, 1, 1, 1))
    log.append(ents(2, 2))
    assert [(e.index, e.term) for e in log.entries(1, 3)] == [(1, 1), (2, 2)]
    with pytest.raises(UnavailableError):
        log.append(ents(4, 2))
    assert log.last_index() == 2


def test_memory_log_append_ignores_compacted_entries() -> None:
    log = memory_log(ents(6, 3, 3), snap(5, 3))
    log.append(ents(2, 1, 1, 1))  # wholly inside the snapshot
    assert (log.first_index(), log.last_index()) == (6, 7)
    log.append(ents(4, 9, 9, 4, 4, 4))  # straddles it: only 6.. counts
    assert [(e.index, e.term) for e in log.entries(6, 9)] == [(6, 4), (7, 4), (8, 4)]
    assert log.term(5) == 3


def test_memory_log_append_ignores_entries_at_or_below_the_snapshot_index() -> None:
    """MemoryLog.append docstring: "Entries at or below the snapshot index are ignored
    (they are already part of the snapshot)." Here the snapshot is taken without
    compacting, so entries up to it are still in the list."""
    log = memory_log(ents(1, 1, 1, 1, 1, 1, 1, 1, 1))
    log.create_snapshot(5, ConfState(voters=frozenset({1})), b"")
    log.append(ents(3, 9))
    assert log.last_index() == 8
    assert log.term(3) == 1
    log.compact(5)  # the snapshot must still be reachable
    assert log.first_index() == 6


def test_memory_log_snapshot_and_compaction_rules() -> None:
    log = memory_log(ents(1, 1, 1, 2, 2, 2))
    with pytest.raises(ValueError, match="snapshot"):
        log.compact(3)  # no snapshot covers it yet
    with pytest.raises(UnavailableError):
        log.create_snapshot(6, ConfState(), b"")
    cs = ConfState(voters=frozenset({1, 2}))
    s = log.create_snapshot(4, cs, b"four")
    assert (s.metadata.index, s.metadata.term, s.metadata.conf_state, s.data) == (4, 2, cs, b"four")
    assert log.create_snapshot(3, ConfState(), b"older") is s  # out of date: unchanged
    assert log.snapshot() is s
    assert log.first_index() == 1  # taking a snapshot does not compact
    log.compact(2)
    assert (log.first_index(), log.last_index(), log.term(2)) == (3, 5, 1)
    log.compact(1)  # already compacted: no-op
    assert log.first_index() == 3
    log.compact(4)
    assert (log.first_index(), log.term(4)) == (5, 2)
    assert log.initial_state()[1] == cs


def test_memory_log_apply_snapshot_replaces_everything_and_ignores_older() -> None:
    log = memory_log(ents(1, 1, 1, 1))
    log.apply_snapshot(snap(10, 5))
    assert (log.first_index(), log.last_index(), log.term(10)) == (11, 10, 5)
    assert log.snapshot().metadata.index == 10
    log.apply_snapshot(snap(7, 4))
    assert log.snapshot().metadata.index == 10
    log.apply_snapshot(snap(10, 6))
    assert log.term(10) == 5


class LogOracle:
    """A MemoryLog as a dict and two numbers, updated the obvious way."""

    def __init__(self) -> None:
        self.terms: dict[int, int] = {}  # index -> term of every entry still held
        self.offset = 0  # index (and term) of the placeholder before the first entry
        self.offset_term = 0
        self.snapshot = (0, 0)

    def first(self) -> int:
        return self.offset + 1

    def last(self) -> int:
        return self.offset + len(self.terms)

    def term(self, index: int) -> int:
        if index < self.offset:
            raise CompactedError(index, self.first())
        if index == self.offset:
            return self.offset_term
        if index not in self.terms:
            raise UnavailableError(index, self.last())
        return self.terms[index]


OPS = st.lists(
    st.tuples(
        st.sampled_from(["append", "append", "compact", "create_snapshot", "apply_snapshot"]),
        st.integers(-3, 12),
        st.lists(st.integers(1, 4), min_size=1, max_size=4),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(ops=OPS)
def test_memory_log_matches_a_dict_oracle(ops: list[tuple[str, int, list[int]]]) -> None:
    log, oracle = MemoryLog(), LogOracle()
    for op, n, terms in ops:
        if op == "append":
            start = max(1, oracle.first() + n)
            entries = [Entry(term=t, index=i) for i, t in enumerate(terms, start=start)]
            if (
                entries[-1].index >= oracle.first()
                and max(start, oracle.first()) <= (oracle.snapshot[0])
            ):
                # Would overwrite entries kept below the snapshot index: see
                # test_memory_log_append_ignores_entries_at_or_below_the_snapshot_index.
                continue
            if start > oracle.last() + 1:
                with pytest.raises(UnavailableError):
                    log.append(entries)
                continue
            log.append(entries)
            for e in entries:
                if e.index >= oracle.first():
                    oracle.terms = {i: t for i, t in oracle.terms.items() if i < e.index}
                    break
            oracle.terms.update({e.index: e.term for e in entries if e.index >= oracle.first()})
        elif op == "compact":
            index = oracle.offset + n
            if index > oracle.snapshot[0] and index > oracle.offset:
                with pytest.raises(ValueError, match="snapshot"):
                    log.compact(index)
                continue
            log.compact(index)
            if index > oracle.offset:
                oracle.offset_term = oracle.term(index)
                oracle.terms = {i: t for i, t in oracle.terms.items() if i > index}
                oracle.offset = index
        elif op == "create_snapshot":
            index = oracle.snapshot[0] + n
            if index > oracle.snapshot[0] and index > oracle.last():
                with pytest.raises(UnavailableError):
                    log.create_snapshot(index, ConfState(), b"")
                continue
            s = log.create_snapshot(index, ConfState(voters=frozenset({index})), b"")
            if index > oracle.snapshot[0]:
                oracle.snapshot = (index, oracle.term(index))
            assert (s.metadata.index, s.metadata.term) == oracle.snapshot
        else:
            index, term = oracle.snapshot[0] + n, terms[0]
            log.apply_snapshot(snap(index, term))
            if index > oracle.snapshot[0]:
                oracle.snapshot = (index, term)
                oracle.offset, oracle.offset_term, oracle.terms = index, term, {}

        assert (log.first_index(), log.last_index()) == (oracle.first(), oracle.last())
        meta = log.snapshot().metadata
        assert (meta.index, meta.term) == oracle.snapshot
        assert oracle.offset <= oracle.snapshot[0] <= oracle.last()
        for i in range(max(0, oracle.offset - 2), oracle.last() + 3):
            try:
                want: int | type[Exception] = oracle.term(i)
            except (CompactedError, UnavailableError) as exc:
                want = type(exc)
            if isinstance(want, int):
                assert log.term(i) == want
            else:
                with pytest.raises(want):
                    log.term(i)
        got = log.entries(oracle.first(), oracle.last() + 1)
        assert [(e.index, e.term) for e in got] == sorted(oracle.terms.items())
