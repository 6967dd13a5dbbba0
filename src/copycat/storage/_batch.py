# `WriteBatch`: what the host wants persisted in one cycle, for any number of groups.
#
# What lives here: the batch object and its operation codes. Recording an operation
# does no I/O and no validation beyond argument shapes; `LogStore.commit` validates
# and applies the whole batch atomically.
#
# What must not: any knowledge of a backend, and any I/O.
"""The write batch a host fills once per ready cycle."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeAlias, final

if TYPE_CHECKING:
    from copycat.raft import ConfState, Entry, HardState, SnapshotMetadata

OP_APPEND: Final = 0
OP_HARD_STATE: Final = 1
OP_CONF_STATE: Final = 2
OP_INSTALL_SNAPSHOT: Final = 3
OP_RECORD_SNAPSHOT: Final = 4
OP_COMPACT: Final = 5
OP_DELETE_GROUP: Final = 6
OP_SET_META: Final = 7

MAX_GROUP_META_BYTES: Final = 4096
"""Largest per-group metadata record `set_meta` accepts (it is small by design: the
node keeps a group's immutable settings there, such as its replica rule)."""

if TYPE_CHECKING:
    Payload: TypeAlias = (
        list[Entry]
        | tuple[Entry, ...]
        | HardState
        | ConfState
        | SnapshotMetadata
        | int
        | bytes
        | None
    )


@final
class WriteBatch:
    """Writes for one atomic commit (one transaction and one fsync) across groups.

    Operations apply in the order they were added. Nothing is validated or written
    until `LogStore.commit(batch)`; if that raises, nothing of the batch is applied.
    A batch may be committed once; build a new one per cycle.
    """

    __slots__ = ("_ops",)

    def __init__(self) -> None:
        self._ops: list[tuple[int, int, Payload]] = []

    def __len__(self) -> int:
        return len(self._ops)

    def __bool__(self) -> bool:
        return bool(self._ops)

    def __repr__(self) -> str:
        return f"<WriteBatch of {len(self._ops)} operations>"

    @property
    def ops(self) -> list[tuple[int, int, Payload]]:
        """The recorded operations as (op code, group, payload); for the stores."""
        return self._ops

    def append(self, group: int, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append `entries` (contiguous indexes) to the group's log, replacing any
        conflicting suffix: every entry at or after `entries[0].index` is dropped first.
        Entries at or below the latest snapshot's index (or the compaction point) are
        ignored: they are already part of the snapshot.
        Appending past `last_index() + 1` is a gap and fails the commit."""
        if entries:
            self._ops.append((OP_APPEND, group, entries))

    def set_hard_state(self, group: int, hard_state: HardState) -> None:
        """Persist the group's term, vote and commit index."""
        self._ops.append((OP_HARD_STATE, group, hard_state))

    def set_conf_state(self, group: int, conf_state: ConfState) -> None:
        """Persist the group's membership, returned by `initial_state()` from now on
        (until a snapshot is installed, which brings its own)."""
        self._ops.append((OP_CONF_STATE, group, conf_state))

    def install_snapshot(self, group: int, metadata: SnapshotMetadata) -> None:
        """Record a snapshot received from the leader. Its file must already be
        written (`store.snapshots`). The whole log is discarded: the group's log now
        starts after `metadata.index`, and its membership becomes the snapshot's.
        A snapshot not newer than the current one is ignored."""
        self._ops.append((OP_INSTALL_SNAPSHOT, group, metadata))

    def record_snapshot(self, group: int, metadata: SnapshotMetadata) -> None:
        """Record a snapshot this node took at `metadata.index` (which must be in the
        log, with `metadata.term` its term). Its file must already be written. The
        log is kept; call `compact` to drop entries. An older snapshot is ignored."""
        self._ops.append((OP_RECORD_SNAPSHOT, group, metadata))

    def compact(self, group: int, index: int) -> None:
        """Drop entries up to and including `index`, which must not pass the latest
        snapshot. Compacting to or below the current compaction point does nothing."""
        self._ops.append((OP_COMPACT, group, index))

    def set_meta(self, group: int, data: bytes) -> None:
        """Store the group's metadata record: opaque bytes of the caller's (at most
        `MAX_GROUP_META_BYTES`), returned by `GroupLog.meta()` from now on, replaced by the
        next `set_meta` and deleted with the group. Raft never reads it; snapshots
        neither carry nor replace it."""
        if not isinstance(data, bytes):
            raise TypeError(f"group metadata is bytes, not {type(data).__name__}")
        if len(data) > MAX_GROUP_META_BYTES:
            raise ValueError(
                f"group metadata of {len(data)} bytes exceeds {MAX_GROUP_META_BYTES} bytes"
            )
        self._ops.append((OP_SET_META, group, data))

    def delete_group(self, group: int) -> None:
        """Remove everything stored for the group: entries, states, metadata, snapshot
        files."""
        self._ops.append((OP_DELETE_GROUP, group, None))
