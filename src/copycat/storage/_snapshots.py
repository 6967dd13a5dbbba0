# Snapshot data: checksummed files per group (`SnapshotFiles`) and an in-memory twin
# (`MemorySnapshots`), behind one `SnapshotStore` protocol.
#
# What lives here: the snapshot file format (docs/storage.md draws it), the
# write-temp / fsync / rename / fsync-directory sequence, streaming readers that
# verify every block before handing it out, and retention of the newest N per group.
#
# What must not: knowledge of the log store's records (the log store says which
# snapshot is current by passing `protect`), asyncio, or threads. Never yield bytes
# whose checksum has not been verified; never delete a file `protect` names.
"""Snapshot data storage: files with checksums, or memory."""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    BinaryIO,
    Final,
    Generic,
    Protocol,
    Self,
    TypeAlias,
    TypeVar,
    final,
)

import msgpack

from copycat.errors import CorruptLogError, FormatVersionError, StorageError
from copycat.raft import ConfState, SnapshotMetadata
from copycat.storage._closing import ClosesOnExit
from copycat.storage._codec import (
    decode_conf_state_body,
    encode_conf_state_body,
    group_prefix,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType

Protector: TypeAlias = "Callable[[int], SnapshotMetadata | None]"
"""Tells retention which snapshot of a group is current (the log store's record)."""

SNAPSHOT_FORMAT_VERSION: Final = 1
"""Version of the snapshot file layout. Bump it on any change."""

DEFAULT_SNAPSHOTS_KEPT: Final = 2
DEFAULT_CHUNK_BYTES: Final = 1 << 20
MAX_BLOCK_BYTES: Final = 1 << 22
"""Blocks are at most 4 MiB: a reader never holds more than one block in memory."""
MAX_HEADER_BYTES: Final = 1 << 20

MAGIC: Final = b"\x89CCSNAP\n"
TRAILER_MAGIC: Final = b"\x89CCEND\n\x00"
_PREAMBLE: Final = struct.Struct("<8sII")  # magic, format version, header body length
_U32: Final = struct.Struct("<I")
_BLOCK: Final = struct.Struct("<II")  # length, crc32 over the length bytes and the data
_TRAILER: Final = struct.Struct("<8sQQII")  # magic, data bytes, blocks, header crc, crc
crc32: Final = zlib.crc32


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotInfo:
    """A stored snapshot: whose, where in the log, and how many data bytes."""

    group: int
    metadata: SnapshotMetadata
    data_bytes: int


class SnapshotReader(Protocol):
    """An opened snapshot whose header and length were verified. Iterate `chunks()`
    to stream the data: each chunk is verified before it is yielded, and a damaged
    block raises `CorruptLogError` (discard what was streamed so far then)."""

    @property
    def metadata(self) -> SnapshotMetadata: ...

    @property
    def data_bytes(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...

    def read_all(self) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> SnapshotReader: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class SnapshotWriter(Protocol):
    """A snapshot being written. `write` chunks in order, then `finish()` makes it
    durable and visible at once; `abort()` (or leaving a `with` block on an
    exception) throws it away. Nothing is visible to readers before `finish()`."""

    def write(self, chunk: bytes | bytearray | memoryview) -> None: ...

    def finish(self) -> SnapshotInfo: ...

    def abort(self) -> None: ...

    def __enter__(self) -> SnapshotWriter: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class SnapshotStore(Protocol):
    """Snapshot data of every group of a node, the newest `keep` per group."""

    protector: Protector | None
    """Names each group's current snapshot, which retention never removes (the log
    store sets it)."""

    def begin_write(self, group: int, metadata: SnapshotMetadata) -> SnapshotWriter:
        """Start writing a snapshot (streaming); see `SnapshotWriter`."""
        ...

    def write(
        self,
        group: int,
        metadata: SnapshotMetadata,
        chunks: Iterable[bytes | bytearray | memoryview],
    ) -> SnapshotInfo:
        """Write a snapshot from an iterable of chunks; durable when it returns."""
        ...

    def write_bytes(self, group: int, metadata: SnapshotMetadata, data: bytes) -> SnapshotInfo:
        """Write a snapshot held whole in memory; durable when it returns."""
        ...

    def open(self, group: int, index: int, term: int) -> SnapshotReader:
        """Open a snapshot for streaming. Raises `CorruptLogError` when it is missing,
        truncated or damaged, `FormatVersionError` for another format version."""
        ...

    def read_bytes(self, group: int, index: int, term: int) -> bytes:
        """The whole data of a snapshot, verified."""
        ...

    def read_metadata(self, group: int, index: int, term: int) -> SnapshotMetadata | None:
        """The metadata of a stored snapshot, or None when there is none."""
        ...

    def list(self, group: int) -> list[SnapshotMetadata]:
        """Metadata of the group's stored snapshots, newest first."""
        ...

    def prune(self, group: int, protect: SnapshotMetadata | None = None) -> None:
        """Remove all but the newest `keep` snapshots; never the one `protect` names,
        nor (with a `protector`) the current snapshot or any newer one, which may be
        about to be recorded. Without a current snapshot nothing is removed."""
        ...

    def delete_group(self, group: int) -> None:
        """Remove every snapshot of the group."""
        ...


def _removable(
    stored: list[tuple[int, int]],
    keep: int,
    protect: SnapshotMetadata | None,
    protector: Protector | None,
    group: int,
) -> list[tuple[int, int]]:
    """Which of `stored` (newest first) retention removes; see `SnapshotStore.prune`."""
    kept = set(stored[:keep])
    if protect is not None:
        kept.add((protect.index, protect.term))
    if protector is not None:
        current = protector(group)
        if current is None:
            return []
        kept.add((current.index, current.term))
        kept.update(s for s in stored if s[0] > current.index)
    return [s for s in stored if s not in kept]


def _file_name(index: int, term: int) -> str:
    return f"{index:020d}-{term:020d}.snap"


def _parse_name(name: str) -> tuple[int, int] | None:
    if not name.endswith(".snap") or len(name) != 46 or name[20] != "-":
        return None
    index, term = name[:20], name[21:41]
    if not (index.isdigit() and term.isdigit()):
        return None
    return int(index), int(term)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_header(group: int, metadata: SnapshotMetadata, version: int) -> bytes:
    """Preamble, header body and header crc of a snapshot file."""
    body: bytes = msgpack.packb(
        [
            group_prefix(group),
            metadata.index,
            metadata.term,
            encode_conf_state_body(metadata.conf_state),
        ]
    )
    preamble = _PREAMBLE.pack(MAGIC, version, len(body))
    return preamble + body + _U32.pack(crc32(body, crc32(preamble[8:])))


class _ReaderBase(ClosesOnExit):
    """What both readers share: the verified metadata and length, `read_all`, and
    closing when a `with` block ends."""

    __slots__ = ("_data_bytes", "_metadata")

    _metadata: SnapshotMetadata
    _data_bytes: int

    @property
    def metadata(self) -> SnapshotMetadata:
        return self._metadata

    @property
    def data_bytes(self) -> int:
        return self._data_bytes

    @abstractmethod
    def chunks(self) -> Iterator[bytes]: ...

    def read_all(self) -> bytes:
        return b"".join(self.chunks())


_StoreT = TypeVar("_StoreT", bound="_SnapshotStoreBase")


class _WriterBase(ABC, Generic[_StoreT]):
    """What both writers share: refusing use once finished, `finish()` (publish, then
    retention) and finish-or-abort when a `with` block ends. Subclasses implement
    `write`, `_publish` and `abort`."""

    __slots__ = ("_done", "_group", "_metadata", "_store")

    def __init__(self, store: _StoreT, group: int, metadata: SnapshotMetadata) -> None:
        self._store = store
        self._group = group
        self._metadata = metadata
        self._done = False

    def _check_open(self) -> None:
        if self._done:
            raise StorageError("the snapshot writer is finished")

    @abstractmethod
    def write(self, chunk: bytes | bytearray | memoryview) -> None: ...

    @abstractmethod
    def _publish(self) -> int:
        """Make the written data durable and visible, set `_done` and return the data
        bytes; on failure abort and raise."""

    @abstractmethod
    def abort(self) -> None: ...

    def finish(self) -> SnapshotInfo:
        self._check_open()
        data_bytes = self._publish()
        self._store.prune(self._group, protect=self._metadata)
        return SnapshotInfo(group=self._group, metadata=self._metadata, data_bytes=data_bytes)

    def __enter__(self) -> Self:
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


class _SnapshotStoreBase(ABC):
    """What both stores share: `keep`, the `protector`, writing through `begin_write`,
    reading whole, listing, and retention over what `_stored` names."""

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self._keep = keep
        self.protector: Protector | None = None

    @abstractmethod
    def begin_write(self, group: int, metadata: SnapshotMetadata) -> SnapshotWriter: ...

    @abstractmethod
    def open(self, group: int, index: int, term: int) -> SnapshotReader: ...

    @abstractmethod
    def read_metadata(self, group: int, index: int, term: int) -> SnapshotMetadata | None: ...

    @abstractmethod
    def _stored(self, group: int) -> list[tuple[int, int]]:
        """(index, term) of the group's stored snapshots, newest first."""

    @abstractmethod
    def _remove(self, group: int, removable: list[tuple[int, int]]) -> None:
        """Delete these stored snapshots of the group (durably, where that applies)."""

    @abstractmethod
    def delete_group(self, group: int) -> None: ...

    def write(
        self,
        group: int,
        metadata: SnapshotMetadata,
        chunks: Iterable[bytes | bytearray | memoryview],
    ) -> SnapshotInfo:
        with self.begin_write(group, metadata) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.finish()

    def write_bytes(self, group: int, metadata: SnapshotMetadata, data: bytes) -> SnapshotInfo:
        return self.write(group, metadata, (data,))

    def read_bytes(self, group: int, index: int, term: int) -> bytes:
        with self.open(group, index, term) as reader:
            return reader.read_all()

    def list(self, group: int) -> list[SnapshotMetadata]:
        result = []
        for index, term in self._stored(group):
            meta = self.read_metadata(group, index, term)
            if meta is not None:
                result.append(meta)
        return result

    def prune(self, group: int, protect: SnapshotMetadata | None = None) -> None:
        stored = self._stored(group)
        if not stored:
            return
        self._remove(group, _removable(stored, self._keep, protect, self.protector, group))


@final
class _FileWriter(_WriterBase["SnapshotFiles"]):
    __slots__ = ("_blocks", "_data_bytes", "_file", "_final", "_header_crc", "_tmp")

    def __init__(
        self, store: SnapshotFiles, group: int, metadata: SnapshotMetadata, final_path: Path
    ) -> None:
        super().__init__(store, group, metadata)
        self._final = final_path
        self._tmp = final_path.with_name(
            f".{final_path.name}.tmp-{os.getpid()}-{next(store._counter)}"
        )
        self._blocks = 0
        self._data_bytes = 0
        header = encode_header(group, metadata, SNAPSHOT_FORMAT_VERSION)
        self._header_crc = _U32.unpack_from(header, len(header) - 4)[0]
        self._file: BinaryIO = open(self._tmp, "xb", buffering=1 << 20)  # noqa: SIM115
        try:
            self._file.write(header)
        except BaseException:
            self.abort()
            raise

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._check_open()
        view = memoryview(chunk).cast("B")
        for start in range(0, len(view), MAX_BLOCK_BYTES):
            block = view[start : start + MAX_BLOCK_BYTES]
            length = _U32.pack(len(block))
            self._file.write(length)
            self._file.write(_U32.pack(crc32(block, crc32(length))))
            self._file.write(block)
            self._blocks += 1
            self._data_bytes += len(block)

    def _publish(self) -> int:
        try:
            fields = _TRAILER.pack(
                TRAILER_MAGIC, self._data_bytes, self._blocks, self._header_crc, 0
            )[:-4]
            self._file.write(fields + _U32.pack(crc32(fields)))
            self._file.flush()
            if self._store._durable:
                os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._final)
            self._done = True
            if self._store._durable:
                _fsync_dir(self._final.parent)
        except BaseException:
            self.abort()
            raise
        return self._data_bytes

    def abort(self) -> None:
        self._done = True
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


@final
class _FileReader(_ReaderBase):
    __slots__ = ("_blocks", "_file", "_group", "_index", "_path")

    def __init__(self, path: Path, group: int, index: int, term: int) -> None:
        self._group = group
        self._index = index
        self._path = path
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise CorruptLogError(group, index, f"snapshot file {path} is missing") from None
        try:
            self._metadata, self._data_bytes, self._blocks = self._verify_frame(term)
        except BaseException:
            self._file.close()
            raise

    def _corrupt(self, detail: str) -> CorruptLogError:
        return CorruptLogError(self._group, self._index, f"snapshot file {self._path}: {detail}")

    def _verify_frame(self, term: int) -> tuple[SnapshotMetadata, int, int]:
        f = self._file
        size = os.fstat(f.fileno()).st_size
        preamble = f.read(_PREAMBLE.size)
        if len(preamble) < _PREAMBLE.size:
            raise self._corrupt("truncated header")
        magic, version, body_len = _PREAMBLE.unpack(preamble)
        if magic != MAGIC:
            raise self._corrupt("not a CopyCat snapshot file (bad magic)")
        if body_len > MAX_HEADER_BYTES or body_len > size:
            raise self._corrupt(f"header length {body_len} is out of range")
        body = f.read(body_len)
        raw_crc = f.read(4)
        if len(body) < body_len or len(raw_crc) < 4:
            raise self._corrupt("truncated header")
        header_crc = crc32(body, crc32(preamble[8:]))
        if _U32.unpack(raw_crc)[0] != header_crc:
            raise self._corrupt("header checksum mismatch")
        if version != SNAPSHOT_FORMAT_VERSION:
            raise FormatVersionError(
                f"snapshot file {self._path}", version, SNAPSHOT_FORMAT_VERSION
            )
        try:
            raw = msgpack.unpackb(body)
            prefix, index, meta_term, conf = raw
            conf_state: ConfState = decode_conf_state_body(self._group, conf)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise self._corrupt(f"undecodable header: {exc}") from exc
        if prefix != group_prefix(self._group) or index != self._index or meta_term != term:
            raise self._corrupt(
                f"header names group {int.from_bytes(prefix, 'big') if isinstance(prefix, bytes) else prefix!r} "
                f"index {index} term {meta_term}"
            )
        header_end = _PREAMBLE.size + body_len + 4
        if size < header_end + _TRAILER.size:
            raise self._corrupt("truncated (no trailer)")
        f.seek(size - _TRAILER.size)
        trailer = f.read(_TRAILER.size)
        t_magic, data_bytes, blocks, t_header_crc, t_crc = _TRAILER.unpack(trailer)
        if t_magic != TRAILER_MAGIC or crc32(trailer[:-4]) != t_crc:
            raise self._corrupt("truncated or damaged trailer")
        if t_header_crc != header_crc:
            raise self._corrupt("trailer belongs to another header")
        if header_end + blocks * _BLOCK.size + data_bytes + _TRAILER.size != size:
            raise self._corrupt(
                f"file is {size} bytes but its trailer describes {blocks} blocks "
                f"of {data_bytes} data bytes"
            )
        f.seek(header_end)
        meta = SnapshotMetadata(index=index, term=meta_term, conf_state=conf_state)
        return meta, data_bytes, blocks

    def chunks(self) -> Iterator[bytes]:
        f = self._file
        remaining = self._data_bytes
        for _ in range(self._blocks):
            head = f.read(_BLOCK.size)
            if len(head) < _BLOCK.size:
                raise self._corrupt("truncated block header")
            length, crc = _BLOCK.unpack(head)
            if length == 0 or length > MAX_BLOCK_BYTES or length > remaining:
                raise self._corrupt(f"block length {length} is out of range")
            data = f.read(length)
            if len(data) < length or crc32(data, crc32(head[:4])) != crc:
                raise self._corrupt("block checksum mismatch")
            remaining -= length
            yield data
        if remaining:
            raise self._corrupt("blocks hold fewer bytes than the trailer says")

    def close(self) -> None:
        self._file.close()


@final
class SnapshotFiles(_SnapshotStoreBase):
    """Snapshots as files: `<root>/<group as 32 hex digits>/<index>-<term>.snap`.

    `keep`: how many snapshots to keep per group (newest by index; default 2, at
    least 1). Keeping two lets a follower finish streaming the previous snapshot
    while a new one is taken. `durable=False` skips the fsyncs.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        keep: int = DEFAULT_SNAPSHOTS_KEPT,
        durable: bool = True,
    ) -> None:
        super().__init__(keep)
        self._root = Path(root)
        self._durable = durable
        self._counter = itertools.count()
        created = not self._root.exists()
        self._root.mkdir(parents=True, exist_ok=True)
        if created and durable:
            _fsync_dir(self._root.parent)
        self._remove_temporaries()

    @property
    def root(self) -> Path:
        return self._root

    def _remove_temporaries(self) -> None:
        """Remove writes a crash interrupted (temporary names, never renamed)."""
        for group_dir in self._root.iterdir():
            if group_dir.is_dir():
                for path in group_dir.iterdir():
                    if path.name.startswith(".") and ".tmp-" in path.name:
                        path.unlink(missing_ok=True)

    def _group_dir(self, group: int) -> Path:
        return self._root / group_prefix(group).hex()

    def path(self, group: int, index: int, term: int) -> Path:
        """Where the snapshot of `group` at (`index`, `term`) lives."""
        return self._group_dir(group) / _file_name(index, term)

    def begin_write(self, group: int, metadata: SnapshotMetadata) -> _FileWriter:
        if metadata.index <= 0:
            raise ValueError("a snapshot's index must be positive")
        group_dir = self._group_dir(group)
        if not group_dir.is_dir():
            group_dir.mkdir(parents=True, exist_ok=True)
            if self._durable:
                _fsync_dir(self._root)
        return _FileWriter(
            self, group, metadata, group_dir / _file_name(metadata.index, metadata.term)
        )

    def open(self, group: int, index: int, term: int) -> _FileReader:
        return _FileReader(self.path(group, index, term), group, index, term)

    def read_metadata(self, group: int, index: int, term: int) -> SnapshotMetadata | None:
        if not self.path(group, index, term).exists():
            return None
        with self.open(group, index, term) as reader:
            return reader.metadata

    def _stored(self, group: int) -> list[tuple[int, int]]:
        group_dir = self._group_dir(group)
        try:
            names = os.listdir(group_dir)
        except FileNotFoundError:
            return []
        found = [parsed for name in names if (parsed := _parse_name(name)) is not None]
        found.sort(reverse=True)
        return found

    def _remove(self, group: int, removable: list[tuple[int, int]]) -> None:
        for index, term in removable:
            self.path(group, index, term).unlink(missing_ok=True)
        if removable and self._durable:
            _fsync_dir(self._group_dir(group))

    def delete_group(self, group: int) -> None:
        group_dir = self._group_dir(group)
        if not group_dir.exists():
            return
        for path in group_dir.iterdir():
            path.unlink(missing_ok=True)
        group_dir.rmdir()
        if self._durable:
            _fsync_dir(self._root)


# -- memory ---------------------------------------------------------------------------


@final
class _MemoryReader(_ReaderBase):
    __slots__ = ("_chunk_bytes", "_data")

    def __init__(self, metadata: SnapshotMetadata, data: bytes, chunk_bytes: int) -> None:
        self._metadata = metadata
        self._data = data
        self._data_bytes = len(data)
        self._chunk_bytes = chunk_bytes

    def chunks(self) -> Iterator[bytes]:
        data = self._data
        step = self._chunk_bytes
        for start in range(0, len(data), step):
            yield data[start : start + step]

    def read_all(self) -> bytes:
        return self._data  # whole already: no copy

    def close(self) -> None:
        """Nothing to release."""


@final
class _MemoryWriter(_WriterBase["MemorySnapshots"]):
    __slots__ = ("_chunks",)

    def __init__(self, store: MemorySnapshots, group: int, metadata: SnapshotMetadata) -> None:
        super().__init__(store, group, metadata)
        self._chunks: list[bytes] = []

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._check_open()
        self._chunks.append(bytes(chunk))

    def _publish(self) -> int:
        self._done = True
        data = b"".join(self._chunks)
        self._chunks.clear()
        meta = self._metadata
        self._store._data.setdefault(self._group, {})[(meta.index, meta.term)] = (meta, data)
        return len(data)

    def abort(self) -> None:
        self._done = True
        self._chunks.clear()


@final
class MemorySnapshots(_SnapshotStoreBase):
    """Snapshots held in memory, with the same API and retention as `SnapshotFiles`."""

    def __init__(
        self, *, keep: int = DEFAULT_SNAPSHOTS_KEPT, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> None:
        super().__init__(keep)
        self._chunk_bytes = chunk_bytes
        self._data: dict[int, dict[tuple[int, int], tuple[SnapshotMetadata, bytes]]] = {}

    def begin_write(self, group: int, metadata: SnapshotMetadata) -> _MemoryWriter:
        group_prefix(group)
        if metadata.index <= 0:
            raise ValueError("a snapshot's index must be positive")
        return _MemoryWriter(self, group, metadata)

    def _get(self, group: int, index: int, term: int) -> tuple[SnapshotMetadata, bytes] | None:
        return self._data.get(group, {}).get((index, term))

    def open(self, group: int, index: int, term: int) -> _MemoryReader:
        found = self._get(group, index, term)
        if found is None:
            raise CorruptLogError(group, index, f"no snapshot data at index {index} term {term}")
        return _MemoryReader(found[0], found[1], self._chunk_bytes)

    def read_metadata(self, group: int, index: int, term: int) -> SnapshotMetadata | None:
        found = self._get(group, index, term)
        return None if found is None else found[0]

    def _stored(self, group: int) -> list[tuple[int, int]]:
        return sorted(self._data.get(group, {}), reverse=True)

    def _remove(self, group: int, removable: list[tuple[int, int]]) -> None:
        stored = self._data[group]
        for key in removable:
            del stored[key]

    def delete_group(self, group: int) -> None:
        self._data.pop(group, None)
