# The directory sync wire format: requests and response chunks as msgpack arrays.
#
# What lives here: encoding that fits every message under the size limit, and strict
# decoding that refuses anything malformed with `ProtocolError` before it allocates more
# than the message's own size. The table of message types is append-only (docs/membership.md).
#
# What must not: I/O, asyncio, kinship, or any state. The `Any` from msgpack is narrowed
# here and nowhere else.
"""Directory sync messages: `SyncRequest` and `SyncChunk`, encoded and decoded."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from copycat.errors import ProtocolError
from copycat.membership._directory import (
    MAX_DATA_STRUCTURE_ID_BYTES,
    MAX_ID,
    Change,
    EntryKey,
    Role,
)

MAGIC: Final = b"CCd"
"""First element of every directory message, so other users of kinship messages never
collide with ours."""

WIRE_VERSION: Final = 1
"""Version of this format. A message with another version is refused and counted."""

MAX_CHANGES_PER_MESSAGE: Final = 8192
"""No chunk carries more changes than this (a 64 KiB chunk holds at most ~3,000)."""

MAX_CHUNKS: Final = 65_536
"""No response is split into more chunks than this."""

_CHUNK_HEADER_BYTES: Final = 128
"""Room kept in each chunk for its header fields (they need at most ~80 bytes)."""

_ROLES: Final = tuple(Role)
_MAX_U64: Final = (1 << 64) - 1


class MessageType(enum.IntEnum):
    """Directory message types. Append only: a number is never reused."""

    SYNC_REQUEST = 1
    SYNC_CHUNK = 2


class ChunkKind(enum.IntEnum):
    """What a response carries."""

    DELTA = 0
    """The coalesced changes since the requested version."""
    SNAPSHOT = 1
    """The whole directory; the receiver replaces its copy."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncRequest:
    """Asks a peer for its directory changes since `from_version` of its run
    `target_epoch`, or for all of it when `full` (or when the peer cannot serve a delta).

    A retry repeats the request id and lists the chunk indexes still `missing` (empty: all
    of them). The peer resends those chunks from its recent responses; when it no longer
    holds the response it builds a new one under the same id."""

    request_id: int
    target_epoch: int
    from_version: int
    full: bool
    missing: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncChunk:
    """One part of a response to request `request_id`: changes `chunk_index` of
    `chunk_count` of a delta from `from_version` (or a snapshot) to `to_version` of the
    run `epoch`, whose directory at `to_version` has digest `digest`."""

    request_id: int
    epoch: int
    kind: ChunkKind
    from_version: int
    to_version: int
    digest: int
    chunk_index: int
    chunk_count: int
    changes: tuple[Change, ...]


Message = SyncRequest | SyncChunk


def encode_request(request: SyncRequest) -> bytes:
    data: bytes = msgpack.packb(
        [
            MAGIC,
            WIRE_VERSION,
            int(MessageType.SYNC_REQUEST),
            request.request_id,
            request.target_epoch,
            request.from_version,
            request.full,
            list(request.missing),
        ]
    )
    return data


def encode_chunks(
    *,
    request_id: int,
    epoch: int,
    kind: ChunkKind,
    from_version: int,
    to_version: int,
    digest: int,
    changes: tuple[Change, ...],
    max_bytes: int,
) -> list[bytes]:
    """The response as chunks of at most `max_bytes` each (at least one chunk, even when
    there are no changes). Bytes grow with the number of changes, never with the size of
    the directory they come from."""
    packer = msgpack.Packer(autoreset=True)
    budget = max_bytes - _CHUNK_HEADER_BYTES
    groups: list[list[bytes]] = [[]]
    used = 0
    for (ds, group, replica), role in changes:
        item: bytes = packer.pack([ds, group, replica, None if role is None else int(role)])
        if groups[-1] and (used + len(item) > budget or len(groups[-1]) >= MAX_CHANGES_PER_MESSAGE):
            groups.append([])
            used = 0
        groups[-1].append(item)
        used += len(item)
    if len(groups) > MAX_CHUNKS:
        raise ValueError(f"a response of {len(groups)} chunks exceeds {MAX_CHUNKS}")
    digest_bytes = digest.to_bytes(16, "big")
    out: list[bytes] = []
    for index, items in enumerate(groups):
        header: bytes = packer.pack_array_header(12) + b"".join(
            packer.pack(value)
            for value in (
                MAGIC,
                WIRE_VERSION,
                int(MessageType.SYNC_CHUNK),
                request_id,
                epoch,
                int(kind),
                from_version,
                to_version,
                digest_bytes,
                index,
                len(groups),
            )
        )
        out.append(header + packer.pack_array_header(len(items)) + b"".join(items))
    return out


def _refuse(reason: str, message: str) -> ProtocolError:
    return ProtocolError(reason, message)


def _u64(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_U64:
        raise _refuse("bad_field", f"{what} must be an unsigned 64-bit integer")
    return value


def _change(raw: object) -> Change:
    if not isinstance(raw, list) or len(raw) != 4:
        raise _refuse("bad_change", "a change must be [ds, group, replica, role]")
    ds, group, replica, role = raw
    if (
        not isinstance(ds, str)
        or not ds
        or len(ds.encode("utf-8", "surrogatepass")) > MAX_DATA_STRUCTURE_ID_BYTES
    ):
        raise _refuse("bad_change", "bad data structure id")
    for value in (group, replica):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID:
            raise _refuse("bad_change", "group and replica ids must be positive 63-bit ints")
    key: EntryKey = (ds, group, replica)
    if role is None:
        return (key, None)
    if not isinstance(role, int) or isinstance(role, bool) or not 0 <= role < len(_ROLES):
        raise _refuse("bad_change", f"unknown role {role!r}")
    return (key, _ROLES[role])


def decode(data: bytes, *, max_bytes: int) -> Message:
    """Decodes one directory message; raises ProtocolError(reason, ...) when it is not one
    or is malformed. `max_bytes` bounds the input before anything is decoded."""
    if len(data) > max_bytes:
        raise _refuse("too_large", f"{len(data)} bytes exceed {max_bytes}")
    try:
        raw: Any = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max(MAX_DATA_STRUCTURE_ID_BYTES, len(MAGIC)),
            max_bin_len=16,
            max_array_len=MAX_CHANGES_PER_MESSAGE,
            max_map_len=0,
            max_ext_len=0,
        )
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise _refuse("undecodable", f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(raw, list) or len(raw) < 3 or raw[0] != MAGIC:
        raise _refuse("not_directory", "not a directory message")
    if raw[1] != WIRE_VERSION:
        raise _refuse("wrong_version", f"wire version {raw[1]!r}, expected {WIRE_VERSION}")
    kind = raw[2]
    if kind == MessageType.SYNC_REQUEST:
        if len(raw) != 8 or not isinstance(raw[6], bool) or not isinstance(raw[7], list):
            raise _refuse("bad_request", "malformed sync request")
        missing = tuple(_u64(i, "missing") for i in raw[7])
        if any(i >= MAX_CHUNKS for i in missing):
            raise _refuse("bad_request", "missing chunk index out of range")
        return SyncRequest(
            request_id=_u64(raw[3], "request_id"),
            target_epoch=_u64(raw[4], "target_epoch"),
            from_version=_u64(raw[5], "from_version"),
            full=raw[6],
            missing=missing,
        )
    if kind == MessageType.SYNC_CHUNK:
        if len(raw) != 12 or not isinstance(raw[8], bytes) or len(raw[8]) != 16:
            raise _refuse("bad_chunk", "malformed sync chunk")
        if not isinstance(raw[11], list):
            raise _refuse("bad_chunk", "changes must be a list")
        chunk_kind = _u64(raw[5], "kind")
        if chunk_kind not in (ChunkKind.DELTA, ChunkKind.SNAPSHOT):
            raise _refuse("bad_chunk", f"unknown chunk kind {chunk_kind}")
        index, count = _u64(raw[9], "chunk_index"), _u64(raw[10], "chunk_count")
        if not 0 <= index < count <= MAX_CHUNKS:
            raise _refuse("bad_chunk", f"chunk {index} of {count}")
        from_version, to_version = _u64(raw[6], "from_version"), _u64(raw[7], "to_version")
        if to_version < from_version:
            raise _refuse("bad_chunk", "to_version is below from_version")
        changes = tuple(_change(item) for item in raw[11])
        if chunk_kind == ChunkKind.SNAPSHOT and any(role is None for _, role in changes):
            raise _refuse("bad_chunk", "a snapshot cannot remove entries")
        return SyncChunk(
            request_id=_u64(raw[3], "request_id"),
            epoch=_u64(raw[4], "epoch"),
            kind=ChunkKind(chunk_kind),
            from_version=from_version,
            to_version=to_version,
            digest=int.from_bytes(raw[8], "big"),
            chunk_index=index,
            chunk_count=count,
            changes=changes,
        )
    raise _refuse("unknown_type", f"unknown message type {kind!r}")
