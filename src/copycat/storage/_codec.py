# The byte layout of every record the log store keeps, and nothing else.
#
# What lives here: key packing, value encoding with its checksum, and decoding that
# verifies the checksum before any field is trusted. `docs/storage.md` draws the same
# layout; the two must change together, and any change of layout bumps
# `STORE_FORMAT_VERSION`.
#
# What must not: I/O, caching, or any knowledge of LMDB. A decoder never returns data
# whose checksum failed: it raises `CorruptLogError` naming the group and the index.
"""Record layout of the log store (see docs/storage.md)."""

from __future__ import annotations

import struct
import zlib
from typing import Final

import msgpack

from copycat.errors import CorruptLogError
from copycat.raft import ConfState, Entry, EntryKind, HardState, SnapshotMetadata

STORE_FORMAT_VERSION: Final = 2
"""Version of the key and record layout below. Bump it on any change.
2 added the group metadata record (tag 5)."""

UPGRADABLE_FORMAT_VERSIONS: Final = (1,)
"""Older versions this layout reads as they are (a strict subset of it): opening such a
store rewrites its format record to `STORE_FORMAT_VERSION`, after which older code
refuses it instead of misreading the records it does not know."""

MAX_GROUP_ID: Final = (1 << 128) - 1
"""Group ids are unsigned 128-bit integers (a ULID fits)."""

MAX_INDEX: Final = (1 << 64) - 1

# -- keys ------------------------------------------------------------------------------
# Entry key:  group id (16 bytes, big-endian) | index (8 bytes, big-endian) = 24 bytes.
# State key:  group id (16 bytes, big-endian) | tag (1 byte)                = 17 bytes.
# Big-endian makes LMDB's bytewise order the numeric order of (group, index).

GROUP_PREFIX_BYTES: Final = 16
ENTRY_KEY_BYTES: Final = 24
_INDEX: Final = struct.Struct(">Q")
pack_index: Final = _INDEX.pack
unpack_index: Final = _INDEX.unpack_from

TAG_HARD_STATE: Final = 1
TAG_CONF_STATE: Final = 2
TAG_SNAPSHOT: Final = 3
TAG_LOG_START: Final = 4
TAG_GROUP_META: Final = 5
STATE_TAGS: Final = (TAG_HARD_STATE, TAG_CONF_STATE, TAG_SNAPSHOT, TAG_LOG_START, TAG_GROUP_META)

META_FORMAT_KEY: Final = b"format_version"


def group_prefix(group: int) -> bytes:
    """The 16-byte key prefix of `group`; raises ValueError for ids out of range."""
    if not 0 <= group <= MAX_GROUP_ID:
        raise ValueError(f"group id {group} is not an unsigned 128-bit integer")
    return group.to_bytes(GROUP_PREFIX_BYTES, "big")


def group_of(key: bytes | memoryview) -> int:
    return int.from_bytes(key[:GROUP_PREFIX_BYTES], "big")


def entry_key(prefix: bytes, index: int) -> bytes:
    return prefix + pack_index(index)


def state_key(prefix: bytes, tag: int) -> bytes:
    return prefix + bytes((tag,))


# -- entry values ----------------------------------------------------------------------
# crc32 (u32 LE) | term (u64 LE) | kind (u8) | data
# The crc32 covers the key and everything after the crc, so a value that moved to
# another key fails its check just as a flipped bit does.

_CRC: Final = struct.Struct("<I")
_ENTRY_HEADER: Final = struct.Struct("<QB")
ENTRY_VALUE_OVERHEAD: Final = _CRC.size + _ENTRY_HEADER.size  # 13 bytes
_KINDS: Final = tuple(EntryKind)
crc32: Final = zlib.crc32


def encode_entries(
    prefix: bytes, entries: list[Entry] | tuple[Entry, ...], out: list[tuple[bytes, bytes]]
) -> None:
    """Append one (key, value) per entry to `out`. Raises ValueError unless the
    entries' indexes are contiguous. This is the write hot path: keep it lean."""
    pack_key = _INDEX.pack
    pack_header = _ENTRY_HEADER.pack
    pack_crc = _CRC.pack
    add = out.append
    expected = entries[0].index
    for entry in entries:
        index = entry.index
        if index != expected:
            raise ValueError(
                f"entries to append must have contiguous indexes: expected {expected}, got {index}"
            )
        expected += 1
        key = prefix + pack_key(index)
        header = pack_header(entry.term, entry.kind)
        data = entry.data
        add((key, pack_crc(crc32(data, crc32(header, crc32(key)))) + header + data))


def decode_entry(
    group: int, index: int, key: bytes | memoryview, value: bytes | memoryview
) -> Entry:
    """Verify and decode one entry record stored under `key` (which must be the key
    of (`group`, `index`))."""
    if len(value) < ENTRY_VALUE_OVERHEAD:
        raise CorruptLogError(group, index, f"entry record of {len(value)} bytes is too short")
    view = memoryview(value)
    (stored,) = _CRC.unpack_from(view)
    if crc32(view[4:], crc32(key)) != stored:
        raise CorruptLogError(group, index, "entry record checksum mismatch")
    term, kind = _ENTRY_HEADER.unpack_from(view, 4)
    if kind >= len(_KINDS):
        raise CorruptLogError(group, index, f"unknown entry kind {kind}")
    return Entry(term=term, index=index, kind=_KINDS[kind], data=bytes(view[ENTRY_VALUE_OVERHEAD:]))


def decode_entry_term(
    group: int, index: int, key: bytes | memoryview, value: bytes | memoryview
) -> int:
    """Verify one entry record and return only its term."""
    if len(value) < ENTRY_VALUE_OVERHEAD:
        raise CorruptLogError(group, index, f"entry record of {len(value)} bytes is too short")
    view = memoryview(value)
    (stored,) = _CRC.unpack_from(view)
    if crc32(view[4:], crc32(key)) != stored:
        raise CorruptLogError(group, index, "entry record checksum mismatch")
    term: int = _ENTRY_HEADER.unpack_from(view, 4)[0]
    return term


# -- state values ----------------------------------------------------------------------
# crc32 (u32 LE, over key + body) | body. Bodies:
#   hard state:  term, vote, commit as u64 LE
#   log start:   index, term as u64 LE (the compaction point: the log holds index+1..)
#   conf state:  msgpack [voters, learners, voters_outgoing, learners_next, auto_leave]
#   snapshot:    msgpack [index, term, conf state list]
#   group meta:  the caller's bytes, as given to `WriteBatch.set_meta`

_HARD_STATE: Final = struct.Struct("<QQQ")
_LOG_START: Final = struct.Struct("<QQ")


def _seal(key: bytes, body: bytes) -> bytes:
    return _CRC.pack(crc32(body, crc32(key))) + body


def _open(group: int, key: bytes | memoryview, value: bytes | memoryview, what: str) -> memoryview:
    view = memoryview(value)
    if len(view) < _CRC.size:
        raise CorruptLogError(group, None, f"{what} record of {len(view)} bytes is too short")
    (stored,) = _CRC.unpack_from(view)
    body = view[_CRC.size :]
    if crc32(body, crc32(key)) != stored:
        raise CorruptLogError(group, None, f"{what} record checksum mismatch")
    return body


def _conf_list(cs: ConfState) -> list[object]:
    return [
        sorted(cs.voters),
        sorted(cs.learners),
        sorted(cs.voters_outgoing),
        sorted(cs.learners_next),
        cs.auto_leave,
    ]


def _conf_from(group: int, raw: object) -> ConfState:
    if not (isinstance(raw, list) and len(raw) == 5):
        raise CorruptLogError(group, None, "malformed membership record")
    voters, learners, outgoing, learners_next, auto_leave = raw
    try:
        return ConfState(
            voters=frozenset(int(n) for n in voters),
            learners=frozenset(int(n) for n in learners),
            voters_outgoing=frozenset(int(n) for n in outgoing),
            learners_next=frozenset(int(n) for n in learners_next),
            auto_leave=bool(auto_leave),
        )
    except (TypeError, ValueError) as exc:
        raise CorruptLogError(group, None, f"malformed membership record: {exc}") from exc


def encode_conf_state_body(cs: ConfState) -> bytes:
    body: bytes = msgpack.packb(_conf_list(cs))
    return body


def decode_conf_state_body(group: int, body: bytes | memoryview) -> ConfState:
    try:
        raw = msgpack.unpackb(body)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptLogError(group, None, f"undecodable membership record: {exc}") from exc
    return _conf_from(group, raw)


def encode_snapshot_metadata_body(meta: SnapshotMetadata) -> bytes:
    body: bytes = msgpack.packb([meta.index, meta.term, _conf_list(meta.conf_state)])
    return body


def decode_snapshot_metadata_body(group: int, body: bytes | memoryview) -> SnapshotMetadata:
    try:
        raw = msgpack.unpackb(body)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptLogError(group, None, f"undecodable snapshot metadata: {exc}") from exc
    if not (
        isinstance(raw, list)
        and len(raw) == 3
        and isinstance(raw[0], int)
        and isinstance(raw[1], int)
    ):
        raise CorruptLogError(group, None, "malformed snapshot metadata")
    return SnapshotMetadata(index=raw[0], term=raw[1], conf_state=_conf_from(group, raw[2]))


def encode_hard_state(key: bytes, hs: HardState) -> bytes:
    return _seal(key, _HARD_STATE.pack(hs.term, hs.vote, hs.commit))


def encode_conf_state(key: bytes, cs: ConfState) -> bytes:
    return _seal(key, encode_conf_state_body(cs))


def encode_snapshot_metadata(key: bytes, meta: SnapshotMetadata) -> bytes:
    return _seal(key, encode_snapshot_metadata_body(meta))


def encode_log_start(key: bytes, index: int, term: int) -> bytes:
    return _seal(key, _LOG_START.pack(index, term))


def encode_group_meta(key: bytes, data: bytes) -> bytes:
    return _seal(key, data)


def decode_group_meta(group: int, key: bytes | memoryview, value: bytes | memoryview) -> bytes:
    return bytes(_open(group, key, value, "group metadata"))


def decode_hard_state(group: int, key: bytes | memoryview, value: bytes | memoryview) -> HardState:
    body = _open(group, key, value, "hard state")
    if len(body) != _HARD_STATE.size:
        raise CorruptLogError(group, None, "hard state record has the wrong size")
    term, vote, commit = _HARD_STATE.unpack(body)
    return HardState(term=term, vote=vote, commit=commit)


def decode_conf_state(group: int, key: bytes | memoryview, value: bytes | memoryview) -> ConfState:
    return decode_conf_state_body(group, _open(group, key, value, "membership"))


def decode_snapshot_metadata(
    group: int, key: bytes | memoryview, value: bytes | memoryview
) -> SnapshotMetadata:
    return decode_snapshot_metadata_body(group, _open(group, key, value, "snapshot metadata"))


def decode_log_start(
    group: int, key: bytes | memoryview, value: bytes | memoryview
) -> tuple[int, int]:
    body = _open(group, key, value, "log start")
    if len(body) != _LOG_START.size:
        raise CorruptLogError(group, None, "log start record has the wrong size")
    index, term = _LOG_START.unpack(body)
    return index, term


# -- the format record -----------------------------------------------------------------
# crc32 (u32 LE, over key + body) | version (u32 LE)

_VERSION: Final = struct.Struct("<I")


def encode_format_version(version: int = STORE_FORMAT_VERSION) -> bytes:
    return _seal(META_FORMAT_KEY, _VERSION.pack(version))


def decode_format_version(value: bytes | memoryview) -> int | None:
    """The stored version, or None when the record fails its checksum."""
    view = memoryview(value)
    if len(view) != _CRC.size + _VERSION.size:
        return None
    (stored,) = _CRC.unpack_from(view)
    if crc32(view[4:], crc32(META_FORMAT_KEY)) != stored:
        return None
    version: int = _VERSION.unpack_from(view, 4)[0]
    return version
