"""The raft log as the core sees it: the durable part (read through a `LogReader`)
followed by the unstable part (entries and possibly a snapshot not yet persisted).

Invariants:
1. applied <= committed <= last_index().
2. Unstable entries start right after the durable log's last index or replace a
   suffix of it; an unstable snapshot, when present, precedes the unstable entries.
3. Committed entries are never truncated: a conflict at or below `committed` is a bug
   and raises `InternalError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from copycat.errors import CompactedError, InternalError, UnavailableError
from copycat.raft._storage import LogReader, limit_size

if TYPE_CHECKING:
    from collections.abc import Sequence

    from copycat.raft._messages import Entry, Snapshot


class RaftLog:
    __slots__ = (
        "applied",
        "committed",
        "max_committed_bytes",
        "storage",
        "unstable_entries",
        "unstable_offset",
        "unstable_snapshot",
    )

    def __init__(self, storage: LogReader, max_committed_bytes: int) -> None:
        self.storage = storage
        self.max_committed_bytes = max_committed_bytes
        first = storage.first_index()
        last = storage.last_index()
        self.unstable_entries: list[Entry] = []
        self.unstable_offset = last + 1
        self.unstable_snapshot: Snapshot | None = None
        # Everything up to the snapshot is committed and applied by definition (entries
        # kept before it for lagging followers are committed too).
        snapshot_index = storage.snapshot().metadata.index
        self.committed = max(first - 1, snapshot_index)
        self.applied = self.committed if snapshot_index < first - 1 else snapshot_index

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable_offset={self.unstable_offset}, unstable={len(self.unstable_entries)})"
        )

    # -- indexes and terms ------------------------------------------------------------

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.metadata.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable_entries:
            return self.unstable_offset + len(self.unstable_entries) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.metadata.index
        return self.storage.last_index()

    def term(self, index: int) -> int:
        """The term at `index`; raises `CompactedError` or `UnavailableError`."""
        offset = self.unstable_offset
        if index >= offset:
            pos = index - offset
            if pos < len(self.unstable_entries):
                return self.unstable_entries[pos].term
            raise UnavailableError(index, self.last_index())
        snap = self.unstable_snapshot
        if snap is not None:
            if index == snap.metadata.index:
                return snap.metadata.term
            if index < snap.metadata.index:
                raise CompactedError(index, snap.metadata.index + 1)
            # Between the snapshot and the unstable entries nothing exists.
            raise UnavailableError(index, self.last_index())
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        """The term at `index`, or 0 when it is compacted or not in the log."""
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        return self.term_or_zero(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a log is at least as up to date as ours if its last term is higher,
        or equal with an index at least as high."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    # -- appending ----------------------------------------------------------------------

    def maybe_append(
        self, prev_index: int, prev_term: int, committed: int, entries: Sequence[Entry]
    ) -> int | None:
        """Append `entries` after (prev_index, prev_term) if our log matches there.
        Returns the index of the last entry now known to match the leader's log, or
        None on a mismatch."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise InternalError(
                    f"entry {conflict} conflicts with the committed prefix (commit "
                    f"{self.committed}): the log matching property is broken"
                )
            self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or conflicts with our log, or 0."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (index, term) at or below `index` whose term is at most `term`:
        the leader's best guess at where our logs can match (fast back-off)."""
        first = self.first_index()
        while index >= first - 1:
            our_term = self.term_or_zero(index)
            if our_term <= term:
                return index, our_term
            index -= 1
        return index, 0

    def append(self, entries: Sequence[Entry]) -> int:
        """Append entries to the unstable log, truncating a conflicting suffix."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        if first - 1 < self.committed:
            raise InternalError(
                f"append at {first} would overwrite committed entries (commit {self.committed})"
            )
        offset = self.unstable_offset
        if first == offset + len(self.unstable_entries):
            self.unstable_entries.extend(entries)
        elif first <= offset:
            # Replace the unstable log; what was durable after `first` is overwritten
            # once these entries are persisted.
            self.unstable_offset = first
            self.unstable_entries = list(entries)
        else:
            del self.unstable_entries[first - offset :]
            self.unstable_entries.extend(entries)
        return self.last_index()

    # -- reading ------------------------------------------------------------------------

    def entries_from(self, lo: int, max_bytes: int | None) -> list[Entry]:
        last = self.last_index()
        if lo > last:
            return []
        return self.slice(lo, last + 1, max_bytes)

    def slice(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        """Entries [lo, hi) from storage and the unstable log, bounded by bytes."""
        first = self.first_index()
        if lo < first:
            raise CompactedError(lo, first)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi - 1, self.last_index())
        if lo == hi:
            return []
        offset = self.unstable_offset
        result: list[Entry] = []
        if lo < offset:
            result = self.storage.entries(lo, min(hi, offset), max_bytes)
            if len(result) < min(hi, offset) - lo:
                return result  # the byte limit cut it short
        if hi > offset:
            start = max(lo, offset)
            result = result + self.unstable_entries[start - offset : hi - offset]
        return limit_size(result, max_bytes)

    def all_entries(self) -> list[Entry]:
        """Every entry still in the log (tests and simulators)."""
        return self.entries_from(self.first_index(), None)

    # -- commit and apply ---------------------------------------------------------------

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise InternalError(
                    f"commit index {index} is past the last index {self.last_index()}"
                )
            self.committed = index

    def maybe_commit(self, index: int, term: int, *, any_term: bool = False) -> bool:
        """Advance the commit index to `index` if its entry is of `term` (§5.4.2:
        only entries of the leader's current term are committed by counting replicas)."""
        if index > self.committed and (any_term or self.term_or_zero(index) == term):
            self.commit_to(index)
            return True
        return False

    def has_next_committed(self) -> bool:
        return self.committed > self.applied and self.applied + 1 >= self.first_index()

    def next_committed(self) -> list[Entry]:
        """Committed entries not yet applied, bounded by `max_committed_bytes`."""
        if not self.has_next_committed():
            return []
        return self.slice(self.applied + 1, self.committed + 1, self.max_committed_bytes)

    def applied_to(self, index: int) -> None:
        if index == 0:
            return
        if index > self.committed or index < self.applied:
            raise InternalError(
                f"applied index {index} out of range [{self.applied}, {self.committed}]"
            )
        self.applied = index

    # -- persistence --------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot
        return self.storage.snapshot()

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to (index, term) are persisted: drop them from the unstable log,
        unless they were replaced meanwhile (the term no longer matches)."""
        offset = self.unstable_offset
        pos = index - offset
        if pos < 0 or pos >= len(self.unstable_entries):
            return
        if self.unstable_entries[pos].term != term:
            return
        del self.unstable_entries[: pos + 1]
        self.unstable_offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        snap = self.unstable_snapshot
        if snap is not None and snap.metadata.index == index:
            self.unstable_snapshot = None

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot (received from the leader)."""
        index = snapshot.metadata.index
        self.committed = index
        self.unstable_snapshot = snapshot
        self.unstable_offset = index + 1
        self.unstable_entries = []
