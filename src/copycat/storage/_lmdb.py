# The LMDB log store: one LMDB environment per node for every group's raft state,
# and snapshot files beside it.
#
# What lives here: opening (lock, format check, loading the per-group caches),
# applying a planned batch in one write transaction (one commit, one fsync), and the
# reads the caches cannot answer. docs/storage.md describes the layout.
#
# What must not: batch rules (they live in `_engine.py`), record layouts (in
# `_codec.py`), asyncio or threads. Every lmdb.Error leaves here as a StorageError.
"""LMDB backend of the log store."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast, final

import lmdb

from copycat.errors import CorruptLogError, FormatVersionError, StorageError
from copycat.raft import ENTRY_OVERHEAD_BYTES, Entry, EntryKind
from copycat.storage._codec import (
    ENTRY_VALUE_OVERHEAD,
    GROUP_PREFIX_BYTES,
    MAX_GROUP_ID,
    META_FORMAT_KEY,
    STATE_TAGS,
    STORE_FORMAT_VERSION,
    TAG_CONF_STATE,
    TAG_GROUP_META,
    TAG_HARD_STATE,
    TAG_LOG_START,
    TAG_SNAPSHOT,
    UPGRADABLE_FORMAT_VERSIONS,
    crc32,
    decode_conf_state,
    decode_entry_term,
    decode_format_version,
    decode_group_meta,
    decode_hard_state,
    decode_log_start,
    decode_snapshot_metadata,
    encode_conf_state,
    encode_entries,
    encode_format_version,
    encode_group_meta,
    encode_hard_state,
    encode_log_start,
    encode_snapshot_metadata,
    group_of,
    pack_index,
    unpack_index,
)
from copycat.storage._engine import (
    P_DELETE_RANGE,
    P_DELETE_STATE,
    P_PUT,
    P_PUT_STATE,
    GroupState,
    Step,
    StoreBase,
)
from copycat.storage._snapshots import DEFAULT_SNAPSHOTS_KEPT, SnapshotFiles

if TYPE_CHECKING:
    from copycat.raft import ConfState, HardState, SnapshotMetadata

DEFAULT_MAP_SIZE_BYTES: Final = 64 << 30
"""Initial LMDB map size (address space, not disk): 64 GiB, doubled when full."""

_KINDS: Final = tuple(EntryKind)
_LOCK_NAME: Final = "LOCK"
_LOG_DIR: Final = "log"
_SNAPSHOT_DIR: Final = "snapshots"


def _damaged(path: Path, exc: lmdb.Error) -> StorageError:
    return StorageError(
        f"cannot open the log store at {path}: LMDB reports {type(exc).__name__}: {exc}. "
        "The store file is damaged or not an LMDB file; the node refuses to start. "
        "Restore the data directory from a backup, or remove it and let the node "
        "rejoin and receive its groups from their replicas."
    )


@final
class LmdbLogStore(StoreBase):
    """The default `LogStore`: one LMDB environment for every group of the node.

    Layout under `data_dir`: `LOCK` (held while open), `log/` (the LMDB environment)
    and `snapshots/` (the snapshot files). See docs/storage.md.

    `durable`: when True (default) `commit` returns only after fsync; when False
    LMDB skips the fsyncs (a machine crash may lose the latest commits, never the
    store's integrity on a filesystem that keeps write order) and `close()` syncs.
    `snapshots_kept`: snapshots kept per group (default 2, at least 1).
    `map_size_bytes`: initial LMDB map size (address space reserved, not disk used);
    doubled whenever a commit finds it full.

    Raises `StorageError` when the directory is in use by another store, or the store
    file is damaged; `FormatVersionError` when it was written by another format.
    """

    _check_each_index = False  # encode_entries checks them inside the transaction

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        durable: bool = True,
        snapshots_kept: int = DEFAULT_SNAPSHOTS_KEPT,
        map_size_bytes: int = DEFAULT_MAP_SIZE_BYTES,
    ) -> None:
        root = Path(data_dir)
        root.mkdir(parents=True, exist_ok=True)
        self._root = root
        self._durable = durable
        self._failed: BaseException | None = None
        self._lock_fd = self._lock(root)
        try:
            snapshots = SnapshotFiles(root / _SNAPSHOT_DIR, keep=snapshots_kept, durable=durable)
            super().__init__(snapshots)
            snapshots.protector = self._current_snapshot
            self._env = self._open_env(root / _LOG_DIR, durable, map_size_bytes)
            try:
                self._groups = self._load()
            except lmdb.Error as exc:
                self._env.close()
                raise _damaged(root / _LOG_DIR, exc) from exc
            except BaseException:
                self._env.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise

    def __repr__(self) -> str:
        return f"<LmdbLogStore at {self._root}>"

    @property
    def path(self) -> Path:
        return self._root

    # -- opening -----------------------------------------------------------------------------

    @staticmethod
    def _lock(root: Path) -> int:
        fd = os.open(root / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(
                f"the data directory {root} is in use by another log store "
                "(another node process, or a store this process has not closed)"
            ) from None
        return fd

    def _open_env(self, path: Path, durable: bool, map_size_bytes: int) -> lmdb.Environment:
        try:
            env = lmdb.open(
                str(path),
                map_size=map_size_bytes,
                max_dbs=3,
                sync=durable,
                metasync=True,
                max_spare_txns=1,
            )
        except lmdb.Error as exc:
            raise _damaged(path, exc) from exc
        try:
            with env.begin(write=True) as txn:
                self._meta = env.open_db(b"meta", txn=txn)
                self._entries = env.open_db(b"entries", txn=txn)
                self._states = env.open_db(b"state", txn=txn)
                raw = txn.get(META_FORMAT_KEY, db=self._meta)
                if raw is None:
                    if txn.stat(self._entries)["entries"] or txn.stat(self._states)["entries"]:
                        raise StorageError(
                            f"the log store at {path} holds records but no format version "
                            "record: it was not written by CopyCat, or that record is lost"
                        )
                    txn.put(META_FORMAT_KEY, encode_format_version(), db=self._meta)
                else:
                    version = decode_format_version(raw)
                    if version is None:
                        raise StorageError(
                            f"the format version record of the log store at {path} "
                            "fails its checksum: the store is damaged"
                        )
                    if version in UPGRADABLE_FORMAT_VERSIONS:
                        txn.put(META_FORMAT_KEY, encode_format_version(), db=self._meta)
                    elif version != STORE_FORMAT_VERSION:
                        raise FormatVersionError(
                            f"the log store at {path}", version, STORE_FORMAT_VERSION
                        )
        except lmdb.Error as exc:
            env.close()
            raise _damaged(path, exc) from exc
        except BaseException:
            env.close()
            raise
        return env

    def _load(self) -> dict[int, GroupState]:
        """Build every group's cache from its state records and the ends of its log."""
        groups: dict[int, GroupState] = {}

        def state_of(gid: int, prefix: bytes) -> GroupState:
            state = groups.get(gid)
            if state is None:
                state = groups[gid] = GroupState(gid, prefix)
                state.stored = True
            return state

        with self._env.begin() as txn:
            cursor = txn.cursor(db=self._states)
            for key, value in cursor:
                if len(key) != GROUP_PREFIX_BYTES + 1:
                    raise StorageError(
                        f"the log store at {self._root} holds a state key of {len(key)} bytes: "
                        "the store is damaged"
                    )
                gid = group_of(key)
                state = state_of(gid, key[:GROUP_PREFIX_BYTES])
                tag = key[GROUP_PREFIX_BYTES]
                try:
                    if tag == TAG_HARD_STATE:
                        state.hard_state = decode_hard_state(gid, key, value)
                    elif tag == TAG_CONF_STATE:
                        state.conf_state = decode_conf_state(gid, key, value)
                    elif tag == TAG_SNAPSHOT:
                        state.snapshot = decode_snapshot_metadata(gid, key, value)
                    elif tag == TAG_LOG_START:
                        state.offset, state.offset_term = decode_log_start(gid, key, value)
                        state.last = max(state.last, state.offset)
                    elif tag == TAG_GROUP_META:
                        state.meta = decode_group_meta(gid, key, value)
                    else:
                        raise CorruptLogError(gid, None, f"unknown state record tag {tag}")
                except CorruptLogError as exc:
                    state.broken = exc

            cursor = txn.cursor(db=self._entries)
            found = cursor.first()
            while found:
                key = cursor.key()
                gid = group_of(key)
                prefix = key[:GROUP_PREFIX_BYTES]
                first = unpack_index(key, GROUP_PREFIX_BYTES)[0]
                if gid == MAX_GROUP_ID:
                    cursor.last()
                    found = False
                else:
                    after = (gid + 1).to_bytes(GROUP_PREFIX_BYTES, "big")
                    if cursor.set_range(after):
                        cursor.prev()
                    else:
                        cursor.last()
                last_key, last_value = cursor.item()
                last = unpack_index(last_key, GROUP_PREFIX_BYTES)[0]
                state = state_of(gid, prefix)
                if first != state.offset + 1 and state.broken is None:
                    state.broken = CorruptLogError(
                        gid,
                        state.offset + 1,
                        f"the log should start at {state.offset + 1} but starts at {first}",
                    )
                state.last = last
                try:
                    term = decode_entry_term(gid, last, last_key, last_value)
                except CorruptLogError:
                    pass  # term(last) reads the record again and reports it
                else:
                    state.run_starts = [last]
                    state.run_terms = [term]
                if found:
                    found = cursor.set_range(after)
        return groups

    # -- reads -------------------------------------------------------------------------------

    def _read_entries(
        self, state: GroupState, lo: int, hi: int, max_bytes: int | None
    ) -> list[Entry]:
        gid = state.group
        prefix = state.prefix
        out: list[Entry] = []
        add = out.append
        index = lo
        size = 0
        kinds = _KINDS
        try:
            with self._env.begin(db=self._entries, buffers=True) as txn:
                cursor = txn.cursor()
                if not cursor.set_key(prefix + pack_index(lo)):
                    raise CorruptLogError(gid, lo, "entry record is missing")
                for key, value in cursor.iternext():
                    expected = prefix + pack_index(index)
                    if len(value) < ENTRY_VALUE_OVERHEAD or crc32(
                        value[4:], crc32(expected)
                    ) != int.from_bytes(value[:4], "little"):
                        if key != expected:
                            raise CorruptLogError(gid, index, "entry record is missing")
                        raise CorruptLogError(gid, index, "entry record checksum mismatch")
                    kind = value[12]
                    if kind >= len(kinds):
                        raise CorruptLogError(gid, index, f"unknown entry kind {kind}")
                    data = bytes(value[ENTRY_VALUE_OVERHEAD:])
                    if max_bytes is not None:
                        size += len(data) + ENTRY_OVERHEAD_BYTES
                        if size > max_bytes and out:
                            return out
                    add(
                        Entry(
                            term=int.from_bytes(value[4:12], "little"),
                            index=index,
                            kind=kinds[kind],
                            data=data,
                        )
                    )
                    index += 1
                    if index == hi:
                        return out
        except lmdb.Error as exc:
            raise CorruptLogError(gid, index, f"LMDB cannot read the record: {exc}") from exc
        raise CorruptLogError(gid, index, "entry record is missing")

    def _read_term(self, state: GroupState, index: int) -> int:
        key = state.prefix + pack_index(index)
        try:
            with self._env.begin(db=self._entries, buffers=True) as txn:
                value = txn.get(key)
                if value is None:
                    raise CorruptLogError(state.group, index, "entry record is missing")
                return decode_entry_term(state.group, index, key, value)
        except lmdb.Error as exc:
            raise CorruptLogError(
                state.group, index, f"LMDB cannot read the record: {exc}"
            ) from exc

    # -- writes ------------------------------------------------------------------------------

    def _apply(self, plan: list[Step]) -> None:
        if self._failed is not None:
            raise StorageError(
                "an earlier commit failed in the storage engine; this store refuses "
                "further writes: restart the node"
            ) from self._failed
        env = self._env
        while True:
            txn = env.begin(write=True)
            try:
                self._write(txn, plan)
            except lmdb.MapFullError:
                txn.abort()
                env.set_mapsize(env.info()["map_size"] * 2)
                continue
            except lmdb.Error as exc:
                txn.abort()
                self._failed = exc
                raise StorageError(f"the log store failed to write: {exc}") from exc
            except BaseException:
                txn.abort()
                raise
            try:
                txn.commit()
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
                continue
            except lmdb.Error as exc:
                self._failed = exc
                raise StorageError(
                    f"the log store failed to commit: {exc}; it refuses further writes, "
                    "restart the node"
                ) from exc
            return

    def _write(self, txn: lmdb.Transaction[bytes], plan: list[Step]) -> None:
        """Apply the plan in `txn`. Entry puts are gathered and written in key order by
        one `putmulti`, flushed before any entry deletion so that order is kept; state
        records keep only the last write per key (the effect of applying them in order).
        """
        cursor = txn.cursor(db=self._entries)
        puts: list[tuple[bytes, bytes]] = []
        put_groups = 0
        states: dict[bytes, bytes | None] = {}
        for kind, state, arg1, arg2 in plan:
            if kind == P_PUT:
                encode_entries(state.prefix, cast("list[Entry]", arg1), puts)
                put_groups += 1
            elif kind == P_PUT_STATE:
                tag = cast("int", arg1)
                key = state.prefix + bytes((tag,))
                if tag == TAG_HARD_STATE:
                    states[key] = encode_hard_state(key, cast("HardState", arg2))
                elif tag == TAG_CONF_STATE:
                    states[key] = encode_conf_state(key, cast("ConfState", arg2))
                elif tag == TAG_SNAPSHOT:
                    states[key] = encode_snapshot_metadata(key, cast("SnapshotMetadata", arg2))
                elif tag == TAG_GROUP_META:
                    states[key] = encode_group_meta(key, cast("bytes", arg2))
                else:
                    index, term = cast("tuple[int, int]", arg2)
                    states[key] = encode_log_start(key, index, term)
            elif kind == P_DELETE_STATE:
                states[state.prefix + bytes((cast("int", arg1),))] = None
            else:
                if puts:
                    self._flush(cursor, puts, put_groups)
                    put_groups = 0
                if kind == P_DELETE_RANGE:
                    self._delete_entries(cursor, state.prefix, cast("int", arg1), cast("int", arg2))
                else:  # P_DELETE_GROUP
                    self._delete_entries(cursor, state.prefix, 0, None)
                    for tag in STATE_TAGS:
                        states[state.prefix + bytes((tag,))] = None
        if puts:
            self._flush(cursor, puts, put_groups)
        if states:
            states_db = self._states
            records = [(key, record) for key, record in states.items() if record is not None]
            if records:
                records.sort()
                txn.cursor(db=states_db).putmulti(records)
            if len(records) != len(states):
                for key, record in states.items():
                    if record is None:
                        txn.delete(key, db=states_db)

    @staticmethod
    def _flush(cursor: lmdb.Cursor[bytes], puts: list[tuple[bytes, bytes]], groups: int) -> None:
        if groups > 1:
            puts.sort()
        # MDB_APPEND (pages filled, no search) is valid when the new keys sort after
        # every key already stored, which holds for the group with the largest id.
        append = not cursor.last() or cursor.key() < puts[0][0]
        cursor.putmulti(puts, append=append)
        puts.clear()

    @staticmethod
    def _delete_entries(cursor: lmdb.Cursor[bytes], prefix: bytes, lo: int, hi: int | None) -> None:
        """Delete the group's entries lo..hi (inclusive; None: to the end)."""
        if not cursor.set_range(prefix + pack_index(lo)):
            return
        size = GROUP_PREFIX_BYTES
        while True:
            key = cursor.key()
            if key[:size] != prefix:
                return
            if hi is not None and unpack_index(key, size)[0] > hi:
                return
            if not cursor.delete():
                return

    # -- lifecycle ---------------------------------------------------------------------------

    def sync(self) -> None:
        """Force everything committed so far to disk (a no-op cost when durable)."""
        if self.closed:
            return
        try:
            self._env.sync(True)
        except lmdb.Error as exc:
            raise StorageError(f"the log store failed to sync: {exc}") from exc

    def _close_backend(self) -> None:
        try:
            if not self._durable and self._failed is None:
                with contextlib.suppress(lmdb.Error):
                    self._env.sync(True)
            self._env.close()
        finally:
            os.close(self._lock_fd)
