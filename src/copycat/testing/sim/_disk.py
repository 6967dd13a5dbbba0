# The simulator's disk for a node's log store: `SimDisk` is the medium that survives a
# power cut, `SimLogStore` is one run's `LogStore` on it.
#
# What lives here: a journal of every write the node's store made, split at the last
# sync into `synced` (on the platter) and `pending` (in the page cache). Durability
# follows the real backend: a durable LMDB store fsyncs inside every commit, and its
# `SnapshotFiles` fsync each snapshot file, unlink and directory as they happen; a
# non-durable one writes everything to the page cache until `sync()` or a clean
# `close()`. A new run rebuilds its store by replaying the journal into a fresh
# `MemoryLogStore`, so a restart goes through the store's real rules.
#
# What must not: I/O, asyncio, threads, a wall clock, or rules of its own (they live in
# `copycat.storage`). LMDB itself is tested against real files in tests/storage; this
# models only which writes survive.
"""`SimDisk` (a node's disk across runs) and `SimLogStore` (a run's log store on it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeAlias, final

from copycat.errors import ClosedError
from copycat.storage import MemoryLogStore, WriteBatch
from copycat.testing.sim._loop import Vanished

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from copycat.raft import SnapshotMetadata
    from copycat.storage import (
        GroupLog,
        LogStore,
        SnapshotInfo,
        SnapshotReader,
        SnapshotStore,
        SnapshotWriter,
    )

_Op: TypeAlias = (
    "tuple[Literal['commit'], WriteBatch]"
    " | tuple[Literal['snapshot'], int, SnapshotMetadata, bytes]"
    " | tuple[Literal['prune'], int, SnapshotMetadata | None]"
    " | tuple[Literal['delete_snapshots'], int]"
)
"""One journaled write: a committed batch (its own copy), a snapshot file, or the
unlinks of snapshot retention and of a group's deletion."""


def _replay(store: MemoryLogStore, op: _Op) -> None:
    raw = store.snapshots  # the store's own snapshots: nothing here is journaled again
    match op:
        case ("commit", batch):
            store.commit(batch)
        case ("snapshot", group, metadata, data):
            raw.write_bytes(group, metadata, data)
        case ("prune", group, protect):
            raw.prune(group, protect)
        case ("delete_snapshots", group):
            raw.delete_group(group)


@final
class SimDisk:
    """One node's disk across crashes and restarts.

    `durable` mirrors the store's setting: every commit (and snapshot write or unlink)
    syncs before it returns. `fsync=False` is a deliberate bug: syncs are counted and
    skipped, so nothing becomes durable but what a torn `crash` lets through.
    """

    def __init__(self, *, durable: bool = True, fsync: bool = True) -> None:
        self.durable = durable
        self.fsync = fsync
        self.synced: list[_Op] = []
        """Every write that reached the platter, in order, since the disk was made."""
        self.pending: list[_Op] = []
        """Writes since the last sync, still in the page cache."""
        self.syncs = 0
        """Syncs asked for (inside commits included), made or, with the bug, skipped."""
        self.ops_lost = 0
        self.crash_at_write: Callable[[], None] | None = None
        """Set by the nemesis: the next write never happens; this is called instead (it
        crashes the node) and the writer's call raises `Vanished`."""
        self._live: SimLogStore | None = None

    def open(self) -> SimLogStore:
        """A new run's store, rebuilt from what the disk holds. After a crash that is
        `synced`; after a clean close the page cache is still there, so `pending` too
        (it stays pending: a later power cut still loses it)."""
        if self._live is not None:
            raise RuntimeError("a store of this disk is still open: close it or crash first")
        inner = MemoryLogStore()
        for op in (*self.synced, *self.pending):
            _replay(inner, op)
        self._live = SimLogStore(self, inner)
        return self._live

    def crash(self, rng: random.Random | None = None, *, tear: bool = False) -> int:
        """A power cut: the open store dies and the page cache is lost. With `tear`
        (and `rng`) a random prefix of it had already been written back. LMDB commits
        are atomic transactions and snapshot files appear by rename, so a prefix of
        whole writes is the only tearing the real store allows. Returns writes lost."""
        if self._live is not None:
            self._live._die()
            self._live = None
        kept = rng.randint(0, len(self.pending)) if tear and rng is not None else 0
        self.synced.extend(self.pending[:kept])
        lost = len(self.pending) - kept
        self.pending.clear()
        self.ops_lost += lost
        return lost

    def _write(self, op: _Op) -> None:
        self._maybe_lose_power()
        self.pending.append(op)
        if self.durable:
            self._sync()

    def _maybe_lose_power(self) -> None:
        crash, self.crash_at_write = self.crash_at_write, None
        if crash is not None:
            crash()
            raise Vanished("the node lost power in the middle of a write")

    def _sync(self) -> None:
        self.syncs += 1
        if self.fsync:
            self.synced.extend(self.pending)
            self.pending.clear()


@final
class SimLogStore:
    """A `LogStore` on a `SimDisk`: a `MemoryLogStore` whose every write is journaled.
    After a crash every call raises `ClosedError`, readers of its groups included."""

    __slots__ = ("_dead", "_disk", "_inner", "_snapshots")

    def __init__(self, disk: SimDisk, inner: MemoryLogStore) -> None:
        self._disk = disk
        self._inner = inner
        self._dead = False
        self._snapshots = SimSnapshots(self, inner.snapshots)

    def __repr__(self) -> str:
        return f"<SimLogStore {'crashed' if self._dead else 'closed' if self.closed else 'open'}>"

    def _die(self) -> None:
        self._dead = True
        self._inner.close()  # readers handed out before the crash refuse too

    def _live(self) -> MemoryLogStore:
        if self._dead:
            raise ClosedError("the node lost power: this store is gone (open the disk again)")
        return self._inner

    def _check_open(self) -> None:
        if self._live().closed:
            raise ClosedError("the log store is closed")

    @property
    def disk(self) -> SimDisk:
        return self._disk

    @property
    def snapshots(self) -> SimSnapshots:
        self._live()
        return self._snapshots

    @property
    def closed(self) -> bool:
        return self._dead or self._inner.closed

    def group(self, group: int) -> GroupLog:
        return self._live().group(group)

    def groups(self) -> list[int]:
        return self._live().groups()

    def commit(self, batch: WriteBatch) -> None:
        """Commit to the inner store, then journal a copy (the caller's batch and its
        entry lists stay the caller's), synced first when the disk is durable."""
        live = self._live()
        if batch.ops:
            self._disk._maybe_lose_power()
        live.commit(batch)  # raises ClosedError once closed; journals nothing
        if batch.ops:
            copy = WriteBatch()
            copy.ops.extend(
                (code, group, tuple(payload) if isinstance(payload, list) else payload)
                for code, group, payload in batch.ops
            )
            self._disk._write(("commit", copy))

    def compact(self, group: int, index: int) -> None:
        batch = WriteBatch()
        batch.compact(group, index)
        self.commit(batch)

    def delete_group(self, group: int) -> None:
        batch = WriteBatch()
        batch.delete_group(group)
        self.commit(batch)

    def sync(self) -> None:
        """Move the page cache to the platter; nothing once closed, as LMDB does."""
        if not self._live().closed:
            self._disk._sync()

    def close(self) -> None:
        """A clean close. LMDB's syncs a non-durable environment first (a durable one
        has nothing unsynced); the disk can be opened again afterwards."""
        if self._live().closed:
            return
        if not self._disk.durable:
            self._disk._sync()
        self._inner.close()
        self._disk._live = None


@final
class SimSnapshots:
    """The store's `SnapshotStore`: the inner store's own `MemorySnapshots`, with each
    write and unlink made from outside journaled (the inner store's retention inside
    `commit` is not: replaying the commit redoes it)."""

    __slots__ = ("_raw", "_store")

    def __init__(self, store: SimLogStore, raw: SnapshotStore) -> None:
        self._store = store
        self._raw = raw

    @property
    def protector(self) -> Callable[[int], SnapshotMetadata | None] | None:
        return self._raw.protector

    @protector.setter
    def protector(self, value: Callable[[int], SnapshotMetadata | None] | None) -> None:
        self._raw.protector = value

    def _open(self) -> SnapshotStore:
        self._store._check_open()
        return self._raw

    def _written(self, group: int, metadata: SnapshotMetadata) -> None:
        data = self._raw.read_bytes(group, metadata.index, metadata.term)
        self._store.disk._write(("snapshot", group, metadata, data))

    def begin_write(self, group: int, metadata: SnapshotMetadata) -> SnapshotWriter:
        return _SimWriter(self, self._open().begin_write(group, metadata), group, metadata)

    def write(
        self,
        group: int,
        metadata: SnapshotMetadata,
        chunks: Iterable[bytes | bytearray | memoryview],
    ) -> SnapshotInfo:
        info = self._open().write(group, metadata, chunks)
        self._written(group, metadata)
        return info

    def write_bytes(self, group: int, metadata: SnapshotMetadata, data: bytes) -> SnapshotInfo:
        return self.write(group, metadata, (data,))

    def open(self, group: int, index: int, term: int) -> SnapshotReader:
        return self._open().open(group, index, term)

    def read_bytes(self, group: int, index: int, term: int) -> bytes:
        return self._open().read_bytes(group, index, term)

    def read_metadata(self, group: int, index: int, term: int) -> SnapshotMetadata | None:
        return self._open().read_metadata(group, index, term)

    def list(self, group: int) -> list[SnapshotMetadata]:
        return self._open().list(group)

    def prune(self, group: int, protect: SnapshotMetadata | None = None) -> None:
        self._open().prune(group, protect)
        self._store.disk._write(("prune", group, protect))

    def delete_group(self, group: int) -> None:
        self._open().delete_group(group)
        self._store.disk._write(("delete_snapshots", group))


@final
class _SimWriter:
    """Streams into the inner store's writer; `finish()` journals the snapshot."""

    __slots__ = ("_done", "_group", "_inner", "_metadata", "_owner")

    def __init__(
        self, owner: SimSnapshots, inner: SnapshotWriter, group: int, metadata: SnapshotMetadata
    ) -> None:
        self._owner = owner
        self._inner = inner
        self._group = group
        self._metadata = metadata
        self._done = False

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._owner._open()
        self._inner.write(chunk)

    def finish(self) -> SnapshotInfo:
        self._owner._open()
        info = self._inner.finish()
        self._done = True
        self._owner._written(self._group, self._metadata)
        return info

    def abort(self) -> None:
        self._done = True
        self._inner.abort()

    def __enter__(self) -> _SimWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            if exc_type is None:
                self.finish()
            else:
                self.abort()


if TYPE_CHECKING:

    def _sim_store_is_a_log_store(store: SimLogStore) -> LogStore:
        """Makes mypy prove that `SimLogStore` satisfies `LogStore`."""
        return store

    def _sim_snapshots_are_a_snapshot_store(snapshots: SimSnapshots) -> SnapshotStore:
        return snapshots

    def _sim_writer_is_a_snapshot_writer(writer: _SimWriter) -> SnapshotWriter:
        return writer
