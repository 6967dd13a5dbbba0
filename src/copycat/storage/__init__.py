# The storage layer: a node's durable raft state for all of its groups.
#
# What lives here: re-exports only. `LogStore` is the plug point the host uses;
# `LmdbLogStore` (default) and `MemoryLogStore` implement it; `open_log_store` picks
# one from settings. Snapshot data goes through `LogStore.snapshots`.
#
# What must not: asyncio, threads, or imports from layers above (transport, host).
# This layer may import `copycat.raft` and `copycat.errors` only.
"""Durable state of a node: one log store shared by all raft groups, with group commit
(one write batch and one fsync per host cycle), and checksummed snapshot files.

See docs/storage.md for the on-disk format and the durability rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from copycat.storage._batch import MAX_GROUP_META_BYTES as MAX_GROUP_META_BYTES
from copycat.storage._batch import WriteBatch as WriteBatch
from copycat.storage._codec import STORE_FORMAT_VERSION as STORE_FORMAT_VERSION
from copycat.storage._engine import GroupLog as GroupLog
from copycat.storage._engine import LogStore as LogStore
from copycat.storage._lmdb import DEFAULT_MAP_SIZE_BYTES as DEFAULT_MAP_SIZE_BYTES
from copycat.storage._lmdb import LmdbLogStore as LmdbLogStore
from copycat.storage._memory import MemoryLogStore as MemoryLogStore
from copycat.storage._snapshots import DEFAULT_SNAPSHOTS_KEPT as DEFAULT_SNAPSHOTS_KEPT
from copycat.storage._snapshots import SNAPSHOT_FORMAT_VERSION as SNAPSHOT_FORMAT_VERSION
from copycat.storage._snapshots import MemorySnapshots as MemorySnapshots
from copycat.storage._snapshots import SnapshotFiles as SnapshotFiles
from copycat.storage._snapshots import SnapshotInfo as SnapshotInfo
from copycat.storage._snapshots import SnapshotReader as SnapshotReader
from copycat.storage._snapshots import SnapshotStore as SnapshotStore
from copycat.storage._snapshots import SnapshotWriter as SnapshotWriter

if TYPE_CHECKING:
    import os

__all__ = [
    "DEFAULT_MAP_SIZE_BYTES",
    "DEFAULT_SNAPSHOTS_KEPT",
    "MAX_GROUP_META_BYTES",
    "SNAPSHOT_FORMAT_VERSION",
    "STORE_FORMAT_VERSION",
    "GroupLog",
    "LmdbLogStore",
    "LogStore",
    "MemoryLogStore",
    "MemorySnapshots",
    "SnapshotFiles",
    "SnapshotInfo",
    "SnapshotReader",
    "SnapshotStore",
    "SnapshotWriter",
    "WriteBatch",
    "open_log_store",
]


def open_log_store(
    data_dir: str | os.PathLike[str] | None,
    *,
    backend: Literal["lmdb", "memory"] = "lmdb",
    durable: bool = True,
    snapshots_kept: int = DEFAULT_SNAPSHOTS_KEPT,
    map_size_bytes: int = DEFAULT_MAP_SIZE_BYTES,
) -> LogStore:
    """Open the node's log store.

    `backend="lmdb"` (default) keeps it under `data_dir` (see `LmdbLogStore`);
    `backend="memory"` keeps it in memory and ignores `data_dir` and `durable`.
    `durable=False` skips fsync on commit: faster, and a machine crash may lose the
    latest commits. `snapshots_kept` is how many snapshots to keep per group.
    """
    if backend == "memory":
        return MemoryLogStore(snapshots_kept=snapshots_kept)
    if backend != "lmdb":
        raise ValueError(f"backend must be 'lmdb' or 'memory', not {backend!r}")
    if data_dir is None:
        raise ValueError("the lmdb backend needs a data_dir")
    return LmdbLogStore(
        data_dir, durable=durable, snapshots_kept=snapshots_kept, map_size_bytes=map_size_bytes
    )
