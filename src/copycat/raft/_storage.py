"""How the raft core reads the durable log: the `LogReader` protocol, and `MemoryLog`,
an in-memory implementation for tests, simulations and `durable=False` nodes.

The core only reads through `LogReader`; writing is the host's job (it persists each
`Ready`). `MemoryLog` therefore also has the mutators a host calls.

Rules for implementations:
1. `entries(lo, hi, max_bytes)` returns entries [lo, hi); at least one entry when the
   range is not empty, however large it is, then stops before `max_bytes` is exceeded.
2. An index at or below the snapshot index raises `CompactedError` from `entries`; from
   `term` only an index below the snapshot index does (the snapshot's own index answers
   with the snapshot's term).
3. An index past the last entry raises `UnavailableError`.
4. Returned entries are immutable and may be shared.
5. `initial_state()` returns the membership as of the state the core resumes from: the
   snapshot's when `RaftConfig.applied` is 0, otherwise the one as of `applied`.

A new group starts from `bootstrap_entries(voters)` written as its first entries (with a
hard state committing them), never from a membership set directly in storage: members
added later replay the log from index 1 and must see the group's first members join.
"""

from __future__ import annotations

from typing import Protocol

from copycat.errors import CompactedError, UnavailableError
from copycat.raft._messages import (
    EMPTY_HARD_STATE,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMetadata,
    add_voter,
    entry_size,
)


class LogReader(Protocol):
    """The raft core's read access to what the host has persisted for one group."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership as of the latest snapshot."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi), bounded by `max_bytes` (at least one entry)."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at `index` (the snapshot's term at the snapshot index)."""
        ...

    def first_index(self) -> int:
        """Index of the first entry that is still in the log (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index when the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot."""
        ...


def bootstrap_entries(voters: list[int] | tuple[int, ...]) -> list[Entry]:
    """The first entries of a new group: one committed `ADD_VOTER` change per initial
    voter, at term 1. Write them with `HardState(term=1, commit=len(voters))`."""
    if not voters or len(set(voters)) != len(voters) or any(v <= 0 for v in voters):
        raise ValueError(f"bootstrap needs distinct positive voter ids, got {voters!r}")
    return [
        Entry(term=1, index=i, kind=EntryKind.CONF_CHANGE, data=add_voter(v).encode())
        for i, v in enumerate(sorted(voters), start=1)
    ]


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of `entries` within `max_bytes`, and never less than one entry."""
    if max_bytes is None or not entries:
        return entries
    total = 0
    for i, entry in enumerate(entries):
        total += entry_size(entry)
        if total > max_bytes and i > 0:
            return entries[:i]
    return entries


class MemoryLog:
    """A `LogReader` backed by a Python list, with the mutators a host needs.

    `_entries[0]` is always a placeholder carrying the snapshot's index and term, so
    that `term(snapshot index)` needs no special case.
    """

    __slots__ = ("_entries", "_hard_state", "_snapshot")

    def __init__(self) -> None:
        self._hard_state = EMPTY_HARD_STATE
        self._snapshot = Snapshot(metadata=SnapshotMetadata(conf_state=ConfState()))
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    @classmethod
    def bootstrap(cls, voters: list[int] | tuple[int, ...]) -> MemoryLog:
        """A log for a member of a new group whose first voters are `voters`."""
        log = cls()
        entries = bootstrap_entries(voters)
        log.append(entries)
        log.set_hard_state(HardState(term=1, commit=len(entries)))
        return log

    # -- LogReader -------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise CompactedError(lo, offset + 1)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi - 1, self.last_index())
        return limit_size(self._entries[lo - offset : hi - offset], max_bytes)

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(index, offset + 1)
        if index - offset >= len(self._entries):
            raise UnavailableError(index, self.last_index())
        return self._entries[index - offset].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- mutators (the host's side) -----------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append entries, replacing any conflicting suffix. Entries at or below the
        snapshot index are ignored (they are already part of the snapshot)."""
        if not entries:
            return
        first = max(self.first_index(), self._snapshot.metadata.index + 1)
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._entries[0].index
        if offset > len(self._entries):
            raise UnavailableError(entries[0].index, self.last_index())
        del self._entries[offset:]
        self._entries.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        if snapshot.metadata.index <= self._snapshot.metadata.index:
            return
        self._snapshot = snapshot
        self._entries = [Entry(term=snapshot.metadata.term, index=snapshot.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot the state machine took at `index` (which must be applied)."""
        if index <= self._snapshot.metadata.index:
            return self._snapshot
        if index > self.last_index():
            raise UnavailableError(index, self.last_index())
        meta = SnapshotMetadata(index=index, term=self.term(index), conf_state=conf_state)
        self._snapshot = Snapshot(metadata=meta, data=data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to and including `index` (which must not pass the last
        snapshot: compacting further would lose committed data)."""
        offset = self._entries[0].index
        if index <= offset:
            return
        if index > self._snapshot.metadata.index:
            raise ValueError(
                f"cannot compact to {index}: the latest snapshot is at "
                f"{self._snapshot.metadata.index}; take a snapshot first"
            )
        term = self.term(index)
        del self._entries[: index - offset]
        self._entries[0] = Entry(term=term, index=index)
