# The backend-independent half of the log store: per-group caches, the planning of a
# write batch, and `GroupLog`, the `LogReader` the raft core reads a group through.
#
# What lives here: the rules of every write operation (conflicting suffixes, gaps,
# compaction bounds, snapshot installs) checked against cached per-group state, and
# turned into a plan of primitive writes that a backend applies atomically. The
# caches (first and last index, the terms of the log's tail, hard state, membership,
# snapshot metadata) are swapped in only after the backend has committed, so a failed
# commit leaves the store exactly as it was.
#
# What must not: I/O of any kind (backends do it), asyncio, or threads. A backend may
# only read durable data for indexes the caches do not answer.
"""Shared logic of the log store backends."""

from __future__ import annotations

from abc import abstractmethod
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Final, NoReturn, Protocol, TypeAlias, cast, final

from copycat._ids import group_name
from copycat.errors import ClosedError, CompactedError, CorruptLogError, UnavailableError
from copycat.raft import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
)
from copycat.storage._batch import (
    OP_APPEND,
    OP_COMPACT,
    OP_CONF_STATE,
    OP_DELETE_GROUP,
    OP_HARD_STATE,
    OP_INSTALL_SNAPSHOT,
    OP_RECORD_SNAPSHOT,
    OP_SET_META,
    WriteBatch,
)
from copycat.storage._closing import ClosesOnExit
from copycat.storage._codec import (
    TAG_CONF_STATE,
    TAG_GROUP_META,
    TAG_HARD_STATE,
    TAG_LOG_START,
    TAG_SNAPSHOT,
    group_prefix,
)

if TYPE_CHECKING:
    from copycat.raft import LogReader
    from copycat.storage._snapshots import SnapshotStore

_EMPTY_HARD_STATE: Final = HardState()
_EMPTY_SNAPSHOT_METADATA: Final = SnapshotMetadata()


class GroupState:
    """What the store caches about one group. Mutated only on private copies while a
    batch is planned; the committed instance is replaced, never changed in place.

    The log holds entries `offset + 1 .. last`; `offset_term` is the term at `offset`
    (the compaction point). `run_starts`/`run_terms` cache the terms of a suffix of the
    log as runs: run k covers `run_starts[k]` up to the next start (the last run up to
    `last`). Empty runs cache nothing.
    """

    __slots__ = (
        "broken",
        "conf_state",
        "group",
        "hard_state",
        "last",
        "meta",
        "offset",
        "offset_term",
        "prefix",
        "run_starts",
        "run_terms",
        "runs_shared",
        "snapshot",
        "stored",
    )

    def __init__(self, group: int, prefix: bytes) -> None:
        self.group = group
        self.prefix = prefix
        self.offset = 0
        self.offset_term = 0
        self.last = 0
        self.run_starts: list[int] = []
        self.run_terms: list[int] = []
        self.runs_shared = False
        self.hard_state: HardState = _EMPTY_HARD_STATE
        self.conf_state: ConfState | None = None
        self.snapshot: SnapshotMetadata = _EMPTY_SNAPSHOT_METADATA
        self.meta: bytes | None = None
        self.broken: CorruptLogError | None = None
        self.stored = False

    def copy(self) -> GroupState:
        other = GroupState.__new__(GroupState)
        other.group = self.group
        other.prefix = self.prefix
        other.offset = self.offset
        other.offset_term = self.offset_term
        other.last = self.last
        other.run_starts = self.run_starts  # copied on first change (_own_runs)
        other.run_terms = self.run_terms
        other.runs_shared = True
        other.hard_state = self.hard_state
        other.conf_state = self.conf_state
        other.snapshot = self.snapshot
        other.meta = self.meta
        other.broken = self.broken
        other.stored = self.stored
        return other

    def cached_term(self, index: int) -> int | None:
        """The term at `index` when the cache knows it (callers check the bounds)."""
        if index == self.offset:
            return self.offset_term
        starts = self.run_starts
        if starts and index >= starts[0]:
            return self.run_terms[bisect_right(starts, index) - 1]
        return None

    def _own_runs(self) -> None:
        if self.runs_shared:
            self.run_starts = self.run_starts.copy()
            self.run_terms = self.run_terms.copy()
            self.runs_shared = False

    def clear_runs(self) -> None:
        self.run_starts = []
        self.run_terms = []
        self.runs_shared = False

    def note_append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Update `last` and the term runs for `entries`, which start at or before
        `last + 1` (anything from their first index on was already dropped)."""
        first = entries[0].index
        term = entries[0].term
        terms = self.run_terms
        if first == self.last + 1 and terms and terms[-1] == term and entries[-1].term == term:
            self.last = entries[-1].index  # the common case: same term, no conflict
            return
        if (
            (first <= self.last and self.run_starts)
            or not self.run_terms
            or self.run_terms[-1] != term
            or entries[-1].term != term
        ):
            self._own_runs()  # the runs change: stop sharing them with the committed state
        starts = self.run_starts
        terms = self.run_terms
        if first <= self.last and starts:
            cut = bisect_left(starts, first)
            del starts[cut:]
            del terms[cut:]
        if not terms or terms[-1] != term:
            starts.append(first)
            terms.append(term)
        if entries[-1].term != term:
            for entry in entries:
                if entry.term != term:
                    if entry.term < term:
                        raise ValueError(
                            f"entry {entry.index} has term {entry.term} after term {term}: "
                            "terms in a log never decrease"
                        )
                    term = entry.term
                    starts.append(entry.index)
                    terms.append(term)
        self.last = entries[-1].index

    def note_compact(self, index: int, term: int) -> None:
        self._own_runs()
        starts = self.run_starts
        terms = self.run_terms
        if starts:
            if index >= self.last:
                starts.clear()
                terms.clear()
            elif index >= starts[0]:
                keep = bisect_right(starts, index) - 1
                del starts[:keep]
                del terms[:keep]
                starts[0] = index + 1
        self.offset = index
        self.offset_term = term


# -- the plan a backend applies ----------------------------------------------------------

P_PUT: Final = 0  # (P_PUT, state, entries, None)
P_DELETE_RANGE: Final = 1  # (P_DELETE_RANGE, state, lo, hi): entries lo..hi inclusive
P_PUT_STATE: Final = 2  # (P_PUT_STATE, state, tag, value)
P_DELETE_STATE: Final = 3  # (P_DELETE_STATE, state, tag, None)
P_DELETE_GROUP: Final = 4  # (P_DELETE_GROUP, state, None, None)

Step: TypeAlias = tuple[int, GroupState, object, object]
"""One primitive write: (P_*, group state, argument, argument). The state carries the
group id and key prefix; the arguments are as commented beside each code."""


_MISSING: Final = object()


class _Closed(dict[int, GroupState]):
    """Stands in for the group table once the store is closed: every use raises."""

    def get(self, key: object, default: object = None) -> NoReturn:
        raise ClosedError("the log store is closed")

    def __getitem__(self, key: int) -> NoReturn:
        raise ClosedError("the log store is closed")


class StoreBase(ClosesOnExit):
    """Group caches, batch planning and reads, shared by the backends.

    Backends implement the abstract hooks below (`LmdbLogStore`, `MemoryLogStore`).
    """

    _check_each_index: bool = True
    """Whether planning checks every appended entry's index; a backend whose `_apply`
    checks them while encoding (and can still abort) turns this off."""

    def __init__(self, snapshots: SnapshotStore) -> None:
        self._groups: dict[int, GroupState] = {}
        self._snapshots = snapshots
        self._blank: dict[int, GroupState] = {}

    # -- backend hooks ---------------------------------------------------------------------

    @abstractmethod
    def _read_entries(
        self, state: GroupState, lo: int, hi: int, max_bytes: int | None
    ) -> list[Entry]:
        """Entries [lo, hi) of the group, bounded by `max_bytes` (at least one)."""

    @abstractmethod
    def _read_term(self, state: GroupState, index: int) -> int:
        """The term of the group's entry at `index`."""

    @abstractmethod
    def _apply(self, plan: list[Step]) -> None:
        """Apply every step atomically (all or nothing), durably when configured."""

    @abstractmethod
    def _close_backend(self) -> None:
        """Release the backend's resources (files, environment, lock)."""

    @abstractmethod
    def sync(self) -> None:
        """Force every committed batch to disk (needed only with `durable=False`)."""

    # -- public API ------------------------------------------------------------------------

    @property
    def snapshots(self) -> SnapshotStore:
        """The group snapshots' data (files for LMDB, memory for the memory backend)."""
        return self._snapshots

    def group(self, group: int) -> GroupLog:
        """The `LogReader` of one group. Unknown groups read as empty; the reader
        stays valid across commits, compactions and even deletion of the group."""
        group_prefix(group)
        return GroupLog(self, group)

    def groups(self) -> list[int]:
        """Ids of every group with anything stored, ascending."""
        return sorted(self._groups)

    def commit(self, batch: WriteBatch) -> None:
        """Apply the whole batch atomically and, when durable, fsync before returning.

        Raises ValueError or UnavailableError for a batch that breaks a rule
        (nothing is written then), `CorruptLogError` when the batch touches a group
        whose stored state is corrupt (only `delete_group` is allowed there), and
        `StorageError` when the backend fails.
        """
        if not batch.ops:
            return
        pending, plan, deleted, new_snapshots = self._plan(batch)
        if plan:
            self._apply(plan)
        groups = self._groups
        for gid, state in pending.items():
            if state is not None and state.stored:
                groups[gid] = state
            else:
                groups.pop(gid, None)
        for gid in deleted:
            if pending[gid] is None:
                self._snapshots.delete_group(gid)
        for gid in new_snapshots:
            state = pending[gid]
            if state is not None:
                self._snapshots.prune(gid, protect=state.snapshot)

    def compact(self, group: int, index: int) -> None:
        """Commit a batch that only compacts `group` up to `index`."""
        batch = WriteBatch()
        batch.compact(group, index)
        self.commit(batch)

    def delete_group(self, group: int) -> None:
        """Commit a batch that only deletes `group`."""
        batch = WriteBatch()
        batch.delete_group(group)
        self.commit(batch)

    def close(self) -> None:
        """Flush and release everything; later use raises `ClosedError`."""
        if isinstance(self._groups, _Closed):
            return
        self._groups = _Closed()
        self._close_backend()

    @property
    def closed(self) -> bool:
        return isinstance(self._groups, _Closed)

    # -- reads -------------------------------------------------------------------------------

    def _current_snapshot(self, group: int) -> SnapshotMetadata | None:
        """The recorded snapshot of `group`, which snapshot retention must keep."""
        if self.closed:
            return None
        state = self._groups.get(group)
        if state is None or state.snapshot.index == 0:
            return None
        return state.snapshot

    def _state(self, group: int) -> GroupState:
        state = self._groups.get(group)
        if state is None:
            state = self._blank.get(group)
            if state is None:
                state = self._blank[group] = GroupState(group, group_prefix(group))
                if len(self._blank) > 4096:
                    self._blank.clear()
            return state
        if state.broken is not None:
            raise state.broken
        return state

    def _term(self, state: GroupState, index: int) -> int:
        if index < state.offset:
            raise CompactedError(index, state.offset + 1)
        if index > state.last:
            raise UnavailableError(index, state.last)
        term = state.cached_term(index)
        if term is None:
            return self._read_term(state, index)
        return term

    # -- planning ----------------------------------------------------------------------------

    def _plan(
        self, batch: WriteBatch
    ) -> tuple[dict[int, GroupState | None], list[Step], list[int], list[int]]:
        groups = self._groups
        pending: dict[int, GroupState | None] = {}
        plan: list[Step] = []
        deleted: list[int] = []
        new_snapshots: list[int] = []
        add = plan.append
        check_each_index = self._check_each_index
        for op, gid, payload in batch.ops:
            state = pending.get(gid, _MISSING)
            if state is _MISSING:
                committed = groups.get(gid)
                if committed is None:
                    state = GroupState(gid, group_prefix(gid))
                else:
                    state = committed.copy()
                pending[gid] = state
            elif state is None:  # deleted earlier in this batch
                state = pending[gid] = GroupState(gid, group_prefix(gid))
            state = cast("GroupState", state)
            if state.broken is not None and op != OP_DELETE_GROUP:
                raise state.broken

            if op == OP_APPEND:
                entries = cast("list[Entry] | tuple[Entry, ...]", payload)
                # Entries at or below the snapshot (or the compaction point) are
                # already part of the snapshot: ignored, as `MemoryLog.append` does.
                first = state.offset + 1
                if state.snapshot.index >= first:
                    first = state.snapshot.index + 1
                lo = entries[0].index
                hi = entries[-1].index
                if hi < first:
                    continue
                if lo < first:
                    entries = entries[first - lo :]
                    lo = first
                if hi - lo + 1 != len(entries):
                    raise ValueError(
                        f"{group_name(gid)}: entries to append must have contiguous indexes "
                        f"(got {lo}..{hi} for {len(entries)} entries)"
                    )
                if check_each_index:
                    for expected, entry in enumerate(entries, lo):
                        if entry.index != expected:
                            raise ValueError(
                                f"{group_name(gid)}: entries to append must have contiguous "
                                f"indexes: expected {expected}, got {entry.index}"
                            )
                if lo > state.last + 1:
                    raise UnavailableError(lo, state.last)
                if lo <= state.last:
                    add((P_DELETE_RANGE, state, lo, state.last))
                add((P_PUT, state, entries, None))
                state.note_append(entries)
                state.stored = True
            elif op == OP_HARD_STATE:
                hard_state = cast("HardState", payload)
                state.hard_state = hard_state
                add((P_PUT_STATE, state, TAG_HARD_STATE, hard_state))
                state.stored = True
            elif op == OP_CONF_STATE:
                conf_state = cast("ConfState", payload)
                state.conf_state = conf_state
                add((P_PUT_STATE, state, TAG_CONF_STATE, conf_state))
                state.stored = True
            elif op == OP_SET_META:
                data = cast("bytes", payload)
                state.meta = data
                add((P_PUT_STATE, state, TAG_GROUP_META, data))
                state.stored = True
            elif op == OP_INSTALL_SNAPSHOT:
                meta = cast("SnapshotMetadata", payload)
                if meta.index <= state.snapshot.index:
                    continue
                self._check_snapshot_data(gid, meta)
                if state.last > state.offset:
                    add((P_DELETE_RANGE, state, state.offset + 1, state.last))
                add((P_PUT_STATE, state, TAG_SNAPSHOT, meta))
                add((P_PUT_STATE, state, TAG_LOG_START, (meta.index, meta.term)))
                if state.conf_state is not None:
                    add((P_DELETE_STATE, state, TAG_CONF_STATE, None))
                state.snapshot = meta
                state.conf_state = None
                state.offset = state.last = meta.index
                state.offset_term = meta.term
                state.clear_runs()
                state.stored = True
                new_snapshots.append(gid)
            elif op == OP_RECORD_SNAPSHOT:
                meta = cast("SnapshotMetadata", payload)
                if meta.index <= state.snapshot.index:
                    continue
                term = self._term(state, meta.index)
                if term != meta.term:
                    raise ValueError(
                        f"{group_name(gid)}: snapshot at index {meta.index} claims term "
                        f"{meta.term} but the log has term {term} there"
                    )
                self._check_snapshot_data(gid, meta)
                add((P_PUT_STATE, state, TAG_SNAPSHOT, meta))
                state.snapshot = meta
                state.stored = True
                new_snapshots.append(gid)
            elif op == OP_COMPACT:
                index = cast("int", payload)
                if index <= state.offset:
                    continue
                if index > state.snapshot.index:
                    raise ValueError(
                        f"{group_name(gid)}: cannot compact to {index}: the latest snapshot is "
                        f"at {state.snapshot.index}; take a snapshot first"
                    )
                term = self._term(state, index)
                add((P_DELETE_RANGE, state, state.offset + 1, index))
                add((P_PUT_STATE, state, TAG_LOG_START, (index, term)))
                state.note_compact(index, term)
                state.stored = True
            elif op == OP_DELETE_GROUP:
                add((P_DELETE_GROUP, state, None, None))
                pending[gid] = None
                deleted.append(gid)
            else:  # pragma: no cover - WriteBatch only records the codes above
                raise ValueError(f"unknown batch operation {op}")
        return pending, plan, deleted, new_snapshots

    def _check_snapshot_data(self, group: int, meta: SnapshotMetadata) -> None:
        found = self._snapshots.read_metadata(group, meta.index, meta.term)
        if found is None:
            raise ValueError(
                f"{group_name(group)}: no snapshot data at index {meta.index} term {meta.term}; "
                "write it with store.snapshots before recording it"
            )
        if found != meta:
            raise ValueError(
                f"{group_name(group)}: the snapshot data's metadata {found} differs from {meta}"
            )


@final
class GroupLog:
    """One group's log as the raft core reads it (`copycat.raft.LogReader`).

    Answers first/last index and recent terms from memory; entries and older terms
    from the backend, verifying each record's checksum (`CorruptLogError` otherwise).
    Reads see every committed batch, and nothing of a batch not yet committed.
    """

    __slots__ = ("_group", "_store")

    def __init__(self, store: StoreBase, group: int) -> None:
        self._store = store
        self._group = group

    def __repr__(self) -> str:
        return f"<GroupLog of group {self._group}>"

    @property
    def group_id(self) -> int:
        return self._group

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state, and the membership last set by `set_conf_state`
        or else the latest snapshot's."""
        state = self._store._state(self._group)
        conf = state.conf_state
        return state.hard_state, conf if conf is not None else state.snapshot.conf_state

    @property
    def hard_state(self) -> HardState:
        return self._store._state(self._group).hard_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi), at least one when the range is not empty, then no more
        than `max_bytes` (counted with `copycat.raft.entry_size`)."""
        state = self._store._state(self._group)
        if lo <= state.offset:
            raise CompactedError(lo, state.offset + 1)
        if hi > state.last + 1:
            raise UnavailableError(hi - 1, state.last)
        if lo >= hi:
            return []
        return self._store._read_entries(state, lo, hi, max_bytes)

    def term(self, index: int) -> int:
        """Term of the entry at `index`; the compaction point answers too."""
        store = self._store
        return store._term(store._state(self._group), index)

    def first_index(self) -> int:
        return self._store._state(self._group).offset + 1

    def last_index(self) -> int:
        return self._store._state(self._group).last

    def snapshot(self) -> Snapshot:
        """The latest snapshot, data read whole and verified. For large snapshots
        stream it instead: `store.snapshots.open(group, index, term)`."""
        store = self._store
        meta = store._state(self._group).snapshot
        if meta.index == 0:
            return Snapshot(metadata=meta)
        data = store._snapshots.read_bytes(self._group, meta.index, meta.term)
        return Snapshot(metadata=meta, data=data)

    def snapshot_metadata(self) -> SnapshotMetadata:
        """The latest snapshot's metadata, without reading its data."""
        return self._store._state(self._group).snapshot

    def meta(self) -> bytes | None:
        """The group's metadata record (`WriteBatch.set_meta`), or None when it has none."""
        return self._store._state(self._group).meta


class LogStore(Protocol):
    """A node's durable raft state for every group it hosts.

    The host's contract, per ready cycle:
    1. Put everything every group's `Ready` asks to persist into one `WriteBatch`:
       snapshot installs first, then appended entries, then hard states.
    2. Call `commit(batch)` once. When it returns, the batch is durable (fsynced)
       unless the store was opened with `durable=False`.
    3. Only then send the messages that depend on it, and apply committed entries.
    4. Snapshot data is written through `snapshots` *before* the batch that records
       it (`install_snapshot`/`record_snapshot`).
    5. One thread at a time: the store is not thread-safe.
    """

    @property
    def snapshots(self) -> SnapshotStore: ...

    @property
    def closed(self) -> bool: ...

    def group(self, group: int) -> GroupLog: ...

    def groups(self) -> list[int]: ...

    def commit(self, batch: WriteBatch) -> None: ...

    def compact(self, group: int, index: int) -> None: ...

    def delete_group(self, group: int) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


if TYPE_CHECKING:

    def _group_log_is_a_log_reader(log: GroupLog) -> LogReader:
        """Makes mypy prove that `GroupLog` satisfies `copycat.raft.LogReader`."""
        return log

    def _stores_are_log_stores(store: StoreBase) -> LogStore:
        """Makes mypy prove that the backends satisfy `LogStore`."""
        return store
