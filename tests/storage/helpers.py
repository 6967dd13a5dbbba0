"""Helpers shared by the storage tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from copycat.raft import Entry, SnapshotMetadata
from copycat.storage import LmdbLogStore, LogStore, MemoryLogStore, WriteBatch

if TYPE_CHECKING:
    from pathlib import Path


class StoreHandle:
    """Holds the store under test and reopens it (LMDB: close and open again, the
    way a restarted node does; memory: the same object, since memory cannot)."""

    def __init__(self, backend: str, path: Path) -> None:
        self.backend = backend
        self.path = path
        self.store: LogStore = self._open()

    def _open(self) -> LogStore:
        if self.backend == "lmdb":
            return LmdbLogStore(self.path)
        return MemoryLogStore()

    @property
    def restartable(self) -> bool:
        return self.backend == "lmdb"

    def reopen(self) -> LogStore:
        if self.restartable:
            self.store.close()
            self.store = self._open()
        return self.store

    def close(self) -> None:
        self.store.close()


def make_entries(lo: int, hi: int, term: int, tag: bytes = b"e") -> list[Entry]:
    """Entries lo..hi-1 of one term, each with distinct data."""
    return [Entry(term=term, index=i, data=tag + b"%d" % i) for i in range(lo, hi)]


def commit(store: LogStore, *ops: tuple[str, int, object]) -> None:
    """Commit one batch of (method name, group, argument) operations."""
    batch = WriteBatch()
    for name, group, arg in ops:
        if name == "delete_group":
            batch.delete_group(group)
        else:
            getattr(batch, name)(group, arg)
    store.commit(batch)


def append(store: LogStore, group: int, entries: list[Entry]) -> None:
    commit(store, ("append", group, entries))


def take_snapshot(
    store: LogStore, group: int, index: int, data: bytes = b"state"
) -> SnapshotMetadata:
    """Write snapshot data at `index` and record it, the way a host does."""
    meta = SnapshotMetadata(index=index, term=store.group(group).term(index))
    store.snapshots.write_bytes(group, meta, data)
    commit(store, ("record_snapshot", group, meta))
    return meta
