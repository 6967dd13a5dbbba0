"""msgpack schemas of everything a frame payload carries: raft messages tagged by
group, snapshot stream control, requests and responses, and the handshake body.

What lives here: pure encode/decode functions. Decoders take untrusted bytes (or
already-unpacked msgpack values) and either return well-typed values or raise
`ProtocolError`; nothing else escapes them (tests/transport/test_fuzz.py proves it).
The layouts are documented in docs/wire.md: change both together, and only by
appending (a new message type, a new trailing field behind a new protocol version).

What must not: sockets, asyncio, logging, counters. Framing (lengths, kinds, flags,
compression) lives in `_frames.py`.

Why hand-written: msgpack gives compact bytes but no schema; the validating decoders
below are the schema, written out per type because generic validation libraries
(pydantic, msgspec) would either add a heavy dependency or not map onto the raft
core's frozen dataclasses without a second copy of every type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgpack

from copycat.errors import ProtocolError
from copycat.raft import (
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    MessageType,
    Propose,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    SnapshotMetadata,
    TimeoutNow,
    TransferLeader,
)

U64_MAX: Final = (1 << 64) - 1
GROUP_MAX: Final = (1 << 128) - 1
"""Group ids are unsigned 128-bit integers (ULIDs fit); those above 2**64-1 travel as
16 big-endian bytes, the rest as msgpack integers."""

Envelope = tuple[int, Message]
"""A raft message and the id of the group it belongs to."""

_Encoder = Callable[[int, Any], list[Any]]
_Decoder = Callable[[int, list[Any]], Message]

_ENTRY_KINDS: Final[dict[int, EntryKind]] = {int(k): k for k in EntryKind}


def _bad(what: str) -> ProtocolError:
    return ProtocolError("bad_message", what)


def _wire_group(group: int) -> int | bytes:
    if 0 <= group <= U64_MAX:
        return group
    if group <= GROUP_MAX:
        return group.to_bytes(16, "big")
    raise ValueError(f"group id {group} is not an unsigned 128-bit integer")


def _group_of(raw: object) -> int:
    if type(raw) is int:
        if raw < 0:
            raise _bad("negative group id")
        return raw
    if type(raw) is bytes and len(raw) == 16:
        return int.from_bytes(raw, "big")
    raise _bad("group id is neither an unsigned integer nor 16 bytes")


# ---------------------------------------------------------------- entries, snapshots


def _entries_out(entries: tuple[Entry, ...]) -> list[list[Any]]:
    return [[e.term, e.index, e.kind, e.data] for e in entries]


def _entries_in(raw: object) -> tuple[Entry, ...]:
    if type(raw) is not list:
        raise _bad("entries is not an array")
    out = []
    kinds = _ENTRY_KINDS
    for e in raw:
        if type(e) is not list or len(e) != 4:
            raise _bad("entry is not a 4-element array")
        t, i, k, d = e
        if type(t) is not int or type(i) is not int or (t | i) < 0 or type(d) is not bytes:
            raise _bad("entry field of the wrong type")
        kind = kinds.get(k) if type(k) is int else None
        if kind is None:
            raise _bad(f"unknown entry kind {k!r}")
        out.append(Entry(term=t, index=i, kind=kind, data=d))
    return tuple(out)


def _ids_in(raw: object) -> frozenset[int]:
    if type(raw) is not list:
        raise _bad("node id set is not an array")
    for n in raw:
        if type(n) is not int or n < 0:
            raise _bad("node id is not an unsigned integer")
    return frozenset(raw)


def encode_snapshot_metadata(meta: SnapshotMetadata) -> list[Any]:
    cs = meta.conf_state
    return [
        meta.index,
        meta.term,
        sorted(cs.voters),
        sorted(cs.learners),
        sorted(cs.voters_outgoing),
        sorted(cs.learners_next),
        cs.auto_leave,
    ]


def decode_snapshot_metadata(raw: object) -> SnapshotMetadata:
    if type(raw) is not list or len(raw) != 7:
        raise _bad("snapshot metadata is not a 7-element array")
    index, term, voters, learners, outgoing, learners_next, auto_leave = raw
    if type(index) is not int or type(term) is not int or (index | term) < 0:
        raise _bad("snapshot index or term is not an unsigned integer")
    if type(auto_leave) is not bool:
        raise _bad("auto_leave is not a boolean")
    return SnapshotMetadata(
        index=index,
        term=term,
        conf_state=ConfState(
            voters=_ids_in(voters),
            learners=_ids_in(learners),
            voters_outgoing=_ids_in(outgoing),
            learners_next=_ids_in(learners_next),
            auto_leave=auto_leave,
        ),
    )


# ---------------------------------------------------------------- raft messages
#
# Wire form of one message: [group, type, term, sender, to, *fields], fields in the
# order of the table in docs/wire.md. `_CODECS` holds each type's field count, which
# `_decode_items` checks before calling the type's decoder; a decoder checks the type
# of every field and that integers are not negative, and raises `_WrongType` (turned
# into "<type>: field of the wrong type" by `_decode_items`) when one is not.


class _WrongType(Exception):
    """A message decoder found a field of the wrong type; never escapes this module."""


def _uints(*values: object) -> bool:
    """True when every value is a non-negative int (not a bool)."""
    acc = 0
    for v in values:
        if type(v) is not int:
            return False
        acc |= v
    return acc >= 0


def _enc_request_vote(g: int, m: RequestVote) -> list[Any]:
    return [
        g,
        1,
        m.term,
        m.sender,
        m.to,
        m.last_log_index,
        m.last_log_term,
        m.pre_vote,
        m.transfer,
    ]


def _dec_request_vote(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, lli, llt, pre_vote, transfer = r
    if not _uints(term, sender, to, lli, llt) or type(pre_vote) is not bool:
        raise _WrongType
    if type(transfer) is not bool:
        raise _WrongType
    return RequestVote(
        term=term,
        sender=sender,
        to=to,
        last_log_index=lli,
        last_log_term=llt,
        pre_vote=pre_vote,
        transfer=transfer,
    )


def _enc_request_vote_response(g: int, m: RequestVoteResponse) -> list[Any]:
    return [g, 2, m.term, m.sender, m.to, m.reject, m.pre_vote]


def _dec_request_vote_response(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, reject, pre_vote = r
    if not _uints(term, sender, to) or type(reject) is not bool or type(pre_vote) is not bool:
        raise _WrongType
    return RequestVoteResponse(term=term, sender=sender, to=to, reject=reject, pre_vote=pre_vote)


def _enc_append_entries(g: int, m: AppendEntries) -> list[Any]:
    return [
        g,
        3,
        m.term,
        m.sender,
        m.to,
        m.prev_index,
        m.prev_term,
        [[e.term, e.index, e.kind, e.data] for e in m.entries],
        m.commit,
    ]


def _dec_append_entries(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, prev_index, prev_term, entries, commit = r
    if (
        type(term) is not int
        or type(sender) is not int
        or type(to) is not int
        or type(prev_index) is not int
        or type(prev_term) is not int
        or type(commit) is not int
        or (term | sender | to | prev_index | prev_term | commit) < 0
    ):
        raise _WrongType
    return AppendEntries(
        term=term,
        sender=sender,
        to=to,
        prev_index=prev_index,
        prev_term=prev_term,
        entries=_entries_in(entries),
        commit=commit,
    )


def _enc_append_entries_response(g: int, m: AppendEntriesResponse) -> list[Any]:
    return [g, 4, m.term, m.sender, m.to, m.index, m.reject, m.hint_index, m.hint_term]


def _dec_append_entries_response(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, index, reject, hint_index, hint_term = r
    if not _uints(term, sender, to, index, hint_index, hint_term) or type(reject) is not bool:
        raise _WrongType
    return AppendEntriesResponse(
        term=term,
        sender=sender,
        to=to,
        index=index,
        reject=reject,
        hint_index=hint_index,
        hint_term=hint_term,
    )


def _enc_heartbeat(g: int, m: Heartbeat) -> list[Any]:
    return [g, 5, m.term, m.sender, m.to, m.commit, m.context]


def _dec_heartbeat(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, commit, context = r
    if not _uints(term, sender, to, commit) or type(context) is not bytes:
        raise _WrongType
    return Heartbeat(term=term, sender=sender, to=to, commit=commit, context=context)


def _enc_heartbeat_response(g: int, m: HeartbeatResponse) -> list[Any]:
    return [g, 6, m.term, m.sender, m.to, m.context]


def _dec_heartbeat_response(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, context = r
    if not _uints(term, sender, to) or type(context) is not bytes:
        raise _WrongType
    return HeartbeatResponse(term=term, sender=sender, to=to, context=context)


def _enc_install_snapshot(g: int, m: InstallSnapshot) -> list[Any]:
    # Only the metadata travels inline; the data goes through the snapshot stream.
    return [g, 7, m.term, m.sender, m.to, encode_snapshot_metadata(m.snapshot.metadata)]


def _dec_install_snapshot(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, meta = r
    if not _uints(term, sender, to):
        raise _WrongType
    return InstallSnapshot(
        term=term, sender=sender, to=to, snapshot=Snapshot(metadata=decode_snapshot_metadata(meta))
    )


def _enc_timeout_now(g: int, m: TimeoutNow) -> list[Any]:
    return [g, 8, m.term, m.sender, m.to]


def _dec_timeout_now(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to = r
    if not _uints(term, sender, to):
        raise _WrongType
    return TimeoutNow(term=term, sender=sender, to=to)


def _enc_propose(g: int, m: Propose) -> list[Any]:
    return [g, 9, m.term, m.sender, m.to, _entries_out(m.entries)]


def _dec_propose(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, entries = r
    if not _uints(term, sender, to):
        raise _WrongType
    return Propose(term=term, sender=sender, to=to, entries=_entries_in(entries))


def _enc_read_index(g: int, m: ReadIndex) -> list[Any]:
    return [g, 10, m.term, m.sender, m.to, m.context]


def _dec_read_index(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, context = r
    if not _uints(term, sender, to) or type(context) is not bytes:
        raise _WrongType
    return ReadIndex(term=term, sender=sender, to=to, context=context)


def _enc_read_index_response(g: int, m: ReadIndexResponse) -> list[Any]:
    return [g, 11, m.term, m.sender, m.to, m.index, m.context]


def _dec_read_index_response(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, index, context = r
    if not _uints(term, sender, to, index) or type(context) is not bytes:
        raise _WrongType
    return ReadIndexResponse(term=term, sender=sender, to=to, index=index, context=context)


def _enc_transfer_leader(g: int, m: TransferLeader) -> list[Any]:
    return [g, 12, m.term, m.sender, m.to, m.target]


def _dec_transfer_leader(g: int, r: list[Any]) -> Message:
    _, _, term, sender, to, target = r
    if not _uints(term, sender, to, target):
        raise _WrongType
    return TransferLeader(term=term, sender=sender, to=to, target=target)


_CODECS: Final[tuple[tuple[type[Message], int, _Encoder, _Decoder], ...]] = (
    # class, field count on the wire (group and type included), encoder, decoder
    (RequestVote, 9, _enc_request_vote, _dec_request_vote),
    (RequestVoteResponse, 7, _enc_request_vote_response, _dec_request_vote_response),
    (AppendEntries, 9, _enc_append_entries, _dec_append_entries),
    (AppendEntriesResponse, 9, _enc_append_entries_response, _dec_append_entries_response),
    (Heartbeat, 7, _enc_heartbeat, _dec_heartbeat),
    (HeartbeatResponse, 6, _enc_heartbeat_response, _dec_heartbeat_response),
    (InstallSnapshot, 6, _enc_install_snapshot, _dec_install_snapshot),
    (TimeoutNow, 5, _enc_timeout_now, _dec_timeout_now),
    (Propose, 6, _enc_propose, _dec_propose),
    (ReadIndex, 6, _enc_read_index, _dec_read_index),
    (ReadIndexResponse, 7, _enc_read_index_response, _dec_read_index_response),
    (TransferLeader, 6, _enc_transfer_leader, _dec_transfer_leader),
)

_ENCODERS: Final[dict[type[Message], _Encoder]] = {cls: enc for cls, _, enc, _ in _CODECS}

_DECODERS: Final[dict[int, tuple[int, _Decoder, str]]] = {
    cls.TYPE: (count, dec, cls.__name__) for cls, count, _, dec in _CODECS
}
"""Wire type -> (field count, decoder, type name for errors)."""

# Every raft message type has a codec, and the wire numbers are the MessageType values.
assert {cls.TYPE for cls in _ENCODERS} == set(_DECODERS) == set(MessageType)


_packb: Final = msgpack.packb
"""For control payloads: a fresh packer per call, safe from any thread."""

Pack = Callable[[Any], bytes]


def new_packer() -> Pack:
    """A fast reusable packer for `encode_message`; one per endpoint (not thread-safe)."""
    pack: Pack = msgpack.Packer(autoreset=True, use_bin_type=True).pack
    return pack


def encode_message(group: int, message: Message, pack: Pack = _packb) -> bytes:
    """One message as msgpack bytes (an element of a MESSAGES frame's array).

    Raises TypeError for an object that is not a raft message and ValueError for a
    group id outside 0..2**128-1 (both are local misuse). `pack` may be a packer from
    `new_packer()`, which is faster than the default."""
    encoder = _ENCODERS.get(type(message))
    if encoder is None:
        raise TypeError(f"not a raft message: {type(message).__name__}")
    if type(group) is not int or not 0 <= group <= U64_MAX:
        group = _wire_group(group)  # type: ignore[assignment]
    packed: bytes = pack(encoder(group, message))
    return packed


def unpack(payload: bytes | bytearray | memoryview) -> object:
    """msgpack-decode one untrusted payload; anything malformed raises ProtocolError.

    The payload's own length bounds every container and string in it (msgpack's
    defaults for `unpackb`), so decoding never allocates much more than the payload."""
    try:
        value: object = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
        return value
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise ProtocolError("bad_msgpack", f"{type(exc).__name__}: {exc}") from None


def decode_message_item(item: object) -> Envelope:
    """One already-unpacked element of a MESSAGES array -> (group, message)."""
    return _decode_items([item])[0]


def decode_messages(payload: bytes | bytearray | memoryview) -> list[Envelope]:
    """A MESSAGES frame payload (a msgpack array of messages) -> envelopes, in order."""
    items = unpack(payload)
    if type(items) is not list:
        raise _bad("MESSAGES payload is not an array")
    return _decode_items(items)


def _decode_items(items: list[Any]) -> list[Envelope]:
    """Already-unpacked MESSAGES elements -> envelopes: the one dispatch of every raft
    message decoder (the hot path of the receiving side)."""
    decoders = _DECODERS
    out: list[Envelope] = []
    append = out.append
    for item in items:
        if type(item) is not list or len(item) < 5:
            raise _bad("message is not an array of at least 5 elements")
        code = item[1]
        codec = decoders.get(code) if type(code) is int else None
        if codec is None:
            raise _bad(f"unknown message type {code!r}")
        g = item[0]
        if type(g) is not int or g < 0:
            g = _group_of(g)
        count, decoder, name = codec
        if len(item) != count:
            raise _bad(f"{name}: wrong field count")
        try:
            append((g, decoder(g, item)))
        except _WrongType:
            raise _bad(f"{name}: field of the wrong type") from None
    return out


# ---------------------------------------------------------------- control payloads


def _ensure(cond: bool, reason: str, what: str) -> None:
    if not cond:
        raise ProtocolError(reason, what)


def _array(raw: object, length: int, reason: str, what: str) -> list[Any]:
    if type(raw) is not list or len(raw) != length:
        raise ProtocolError(reason, what)
    return raw


def encode_snapshot_begin(stream_id: int, group: int, message: InstallSnapshot) -> bytes:
    packed: bytes = _packb(
        [
            stream_id,
            _wire_group(group),
            message.term,
            message.sender,
            message.to,
            encode_snapshot_metadata(message.snapshot.metadata),
        ]
    )
    return packed


def decode_snapshot_begin(
    payload: bytes | bytearray | memoryview,
) -> tuple[int, tuple[int, InstallSnapshot]]:
    raw = _array(unpack(payload), 6, "bad_snapshot", "SNAPSHOT_BEGIN shape")
    stream_id, group, term, sender, to, meta = raw
    _ensure(_uints(stream_id, term, sender, to), "bad_snapshot", "SNAPSHOT_BEGIN field types")
    g = _group_of(group)
    message = InstallSnapshot(
        term=term, sender=sender, to=to, snapshot=Snapshot(metadata=decode_snapshot_metadata(meta))
    )
    return stream_id, (g, message)


def encode_pair(a: int, b: int | bool | str) -> bytes:
    """[a, b]: SNAPSHOT_CREDIT (stream, credits), SNAPSHOT_ABORT (stream, reason)."""
    packed: bytes = _packb([a, b])
    return packed


def decode_stream_credit(payload: bytes | bytearray | memoryview) -> tuple[int, int]:
    raw = _array(unpack(payload), 2, "bad_snapshot", "SNAPSHOT_CREDIT shape")
    stream_id, credits = raw
    _ensure(_uints(stream_id, credits), "bad_snapshot", "SNAPSHOT_CREDIT field types")
    _ensure(credits <= 1 << 20, "bad_snapshot", "SNAPSHOT_CREDIT grants too many credits")
    return stream_id, credits


def decode_stream_reason(payload: bytes | bytearray | memoryview) -> tuple[int, str]:
    """SNAPSHOT_ABORT: [stream_id, reason]."""
    raw = _array(unpack(payload), 2, "bad_snapshot", "SNAPSHOT_ABORT shape")
    stream_id, reason = raw
    _ensure(_uints(stream_id) and type(reason) is str, "bad_snapshot", "SNAPSHOT_ABORT types")
    return stream_id, reason[:500]


def encode_snapshot_end(stream_id: int, chunks: int, total_bytes: int) -> bytes:
    packed: bytes = _packb([stream_id, chunks, total_bytes])
    return packed


def decode_snapshot_end(payload: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    raw = _array(unpack(payload), 3, "bad_snapshot", "SNAPSHOT_END shape")
    stream_id, chunks, total = raw
    _ensure(_uints(stream_id, chunks, total), "bad_snapshot", "SNAPSHOT_END field types")
    return stream_id, chunks, total


def encode_snapshot_result(stream_id: int, ok: bool, message: str) -> bytes:
    packed: bytes = _packb([stream_id, ok, message])
    return packed


def decode_snapshot_result(payload: bytes | bytearray | memoryview) -> tuple[int, bool, str]:
    raw = _array(unpack(payload), 3, "bad_snapshot", "SNAPSHOT_RESULT shape")
    stream_id, ok, message = raw
    _ensure(
        _uints(stream_id) and type(ok) is bool and type(message) is str,
        "bad_snapshot",
        "SNAPSHOT_RESULT field types",
    )
    return stream_id, ok, message[:500]


def encode_request(request_id: int, method: str, body: bytes) -> bytes:
    packed: bytes = _packb([request_id, method, body])
    return packed


def decode_request(payload: bytes | bytearray | memoryview) -> tuple[int, str, bytes]:
    raw = _array(unpack(payload), 3, "bad_request", "REQUEST shape")
    request_id, method, body = raw
    _ensure(
        _uints(request_id) and type(method) is str and type(body) is bytes,
        "bad_request",
        "REQUEST field types",
    )
    _ensure(0 < len(method) <= 128, "bad_request", "REQUEST method name length")
    return request_id, method, body


ErrorFields = dict[str, int | str | bool | None]


def encode_response_ok(request_id: int, body: bytes) -> bytes:
    packed: bytes = _packb([request_id, 0, body])
    return packed


def encode_response_error(request_id: int, code: str, message: str, fields: ErrorFields) -> bytes:
    packed: bytes = _packb([request_id, 1, [code, message[:2000], fields]])
    return packed


def decode_response(
    payload: bytes | bytearray | memoryview,
) -> tuple[int, bytes | tuple[str, str, ErrorFields]]:
    """-> (request_id, body) on success, (request_id, (code, message, fields)) on error."""
    raw = _array(unpack(payload), 3, "bad_response", "RESPONSE shape")
    request_id, status, result = raw
    _ensure(_uints(request_id) and status in (0, 1), "bad_response", "RESPONSE header")
    if status == 0:
        _ensure(type(result) is bytes, "bad_response", "RESPONSE body is not bytes")
        return request_id, result
    code, message, fields = _array(result, 3, "bad_response", "RESPONSE error shape")
    _ensure(
        type(code) is str and type(message) is str and type(fields) is dict,
        "bad_response",
        "RESPONSE error field types",
    )
    clean: ErrorFields = {}
    for key, value in fields.items():
        _ensure(
            type(key) is str and (value is None or type(value) in (int, str, bool)),
            "bad_response",
            "RESPONSE error fields must map names to scalars",
        )
        clean[key] = value
    return request_id, (code[:128], message, clean)


# ---------------------------------------------------------------- handshake body


HandshakeBody = dict[str, Any]
_T = TypeVar("_T")


def encode_handshake_body(body: HandshakeBody) -> bytes:
    packed: bytes = _packb(body)
    return packed


def decode_handshake_body(payload: bytes | bytearray | memoryview) -> HandshakeBody:
    """A handshake map; values are type-checked by the caller with `handshake_field`."""
    raw = unpack(payload)
    if type(raw) is not dict:
        raise ProtocolError("bad_handshake", "handshake body is not a map")
    return raw


def handshake_field(body: HandshakeBody, key: str, kind: type[_T], default: _T | None = None) -> _T:
    """`body[key]` if it is exactly of type `kind`; the default when absent; else raise."""
    if key not in body:
        if default is None:
            raise ProtocolError("bad_handshake", f"handshake lacks {key!r}")
        return default
    value = body[key]
    if type(value) is not kind:
        raise ProtocolError("bad_handshake", f"handshake field {key!r} has the wrong type")
    result: _T = value
    return result
