# The simulator's disk: `SimDisk` outlives a node's runs; each run opens a `SimStore` on it.
#
# What lives here: a journal of every write a node's log store made, split at the last
# sync: what was synced survives a power cut, what was not is lost (or, with `tear`, a
# prefix of it survives, as page-cache writeback may have reached the platter; LMDB
# commits are whole transactions, so a prefix of whole writes is the only tearing it
# allows). A new run rebuilds its store by replaying the surviving journal into a
# `MemoryLogStore`, so restart goes through the store's real recovery rules.
#
# What must not: I/O, asyncio, threads. LMDB itself is tested against real files and
# SIGKILL in tests/storage; this models only what survives.
"""`SimDisk` (a node's disk across runs) and `SimStore` (a run's log store on it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from copycat.errors import ClosedError
from copycat.storage import MemoryLogStore, WriteBatch

if TYPE_CHECKING:
    import random

    from copycat.raft import SnapshotMetadata
    from copycat.storage import GroupLog, LogStore, SnapshotInfo, SnapshotStore


class _Snapshots:
    """The run's snapshot store: a snapshot is durable when written (the file is fsynced
    and renamed whole), so its write goes to the synced journal at once."""

    def __init__(self, store: SimStore) -> None:
        self._store = store

    def write_bytes(self, group: int, metadata: SnapshotMetadata, data: bytes) -> SnapshotInfo:
        info = self._store._live().snapshots.write_bytes(group, metadata, data)
        self._store.disk.synced.append(("snapshot", group, metadata, bytes(data)))
        return info

    def begin_write(self, group: int, metadata: SnapshotMetadata) -> _Writer:
        return _Writer(self, group, metadata)

    def prune(self, group: int, protect: SnapshotMetadata | None = None) -> None:
        self._store._live().snapshots.prune(group, protect)
        self._store.disk.pending.append(("prune", group, protect, b""))

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        return getattr(self._store._live().snapshots, name)


class _Writer:
    def __init__(self, owner: _Snapshots, group: int, metadata: SnapshotMetadata) -> None:
        self._owner = owner
        self._group = group
        self._metadata = metadata
        self._chunks: list[bytes] = []

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._chunks.append(bytes(chunk))

    def finish(self) -> SnapshotInfo:
        return self._owner.write_bytes(self._group, self._metadata, b"".join(self._chunks))

    def abort(self) -> None:
        self._chunks = []

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.abort()


_Op = tuple[str, int, Any, bytes]


class SimDisk:
    """A node's disk. `fsync=False` is a deliberate bug: syncs are acknowledged and not made."""

    def __init__(self, *, fsync: bool = True) -> None:
        self.fsync = fsync
        self.synced: list[WriteBatch | _Op] = []
        self.pending: list[WriteBatch | _Op] = []
        self.store: SimStore | None = None
        self.syncs = 0
        self.ops_lost = 0

    def open(self) -> SimStore:
        if self.store is not None and not self.store.dead:
            raise RuntimeError("a store of this disk is still open")
        inner = MemoryLogStore()
        for op in self.synced:
            if isinstance(op, WriteBatch):
                inner.commit(op)
            elif op[0] == "snapshot":
                inner.snapshots.write_bytes(op[1], op[2], op[3])
            else:
                inner.snapshots.prune(op[1], op[2])
        self.store = SimStore(self, inner)
        return self.store

    def sync(self) -> None:
        self.syncs += 1
        if self.fsync:
            self.synced.extend(self.pending)
            self.pending.clear()

    def crash(self, rng: random.Random | None = None, *, tear: bool = False) -> int:
        """A power cut: the open store dies; writes not synced are lost."""
        if self.store is not None:
            self.store.dead = True
        kept = rng.randint(0, len(self.pending)) if tear and rng is not None else 0
        self.synced.extend(self.pending[:kept])
        lost = len(self.pending) - kept
        self.pending.clear()
        self.ops_lost += lost
        return lost


class SimStore:
    """A `LogStore` on a `SimDisk`: a `MemoryLogStore` whose every commit is journaled
    and synced, as a durable LMDB store fsyncs inside every commit."""

    def __init__(self, disk: SimDisk, inner: MemoryLogStore) -> None:
        self.disk = disk
        self.inner = inner
        self.dead = False
        self._snapshots = _Snapshots(self)

    def _live(self) -> MemoryLogStore:
        if self.dead:
            raise ClosedError("the node crashed: its store is gone")
        return self.inner

    @property
    def snapshots(self) -> SnapshotStore:
        self._live()
        return self._snapshots

    @property
    def closed(self) -> bool:
        return self.dead or self.inner.closed

    def group(self, group: int) -> GroupLog:
        return self._live().group(group)

    def groups(self) -> list[int]:
        return self._live().groups()

    def commit(self, batch: WriteBatch) -> None:
        inner = self._live()
        inner.commit(batch)
        copy = WriteBatch()
        copy.ops.extend(batch.ops)
        self.disk.pending.append(copy)
        self.disk.sync()

    def compact(self, group: int, index: int) -> None:
        batch = WriteBatch()
        batch.compact(group, index)
        self.commit(batch)

    def delete_group(self, group: int) -> None:
        batch = WriteBatch()
        batch.delete_group(group)
        self.commit(batch)

    def sync(self) -> None:
        self._live()
        self.disk.sync()

    def close(self) -> None:
        if not self.dead:
            self.disk.sync()
            self.inner.close()
            self.dead = True

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        return getattr(self._live(), name)


def _is_log_store(store: SimStore) -> LogStore:
    return store
