"""The message codec and the frame reader: round trips of every raft message type,
and hypothesis fuzzing that proves decoders of untrusted bytes raise `ProtocolError`
and nothing else."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copycat.errors import ProtocolError
from copycat.raft import (
    MESSAGE_CLASSES,
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
from copycat.transport import FrameReader, decode_messages, encode_message
from copycat.transport._codec import (
    decode_handshake_body,
    decode_message_item,
    decode_request,
    decode_response,
    decode_snapshot_begin,
    decode_snapshot_end,
    decode_snapshot_result,
    decode_stream_credit,
    decode_stream_reason,
    new_packer,
)
from copycat.transport._endpoint import _array_header
from copycat.transport._frames import (
    FRAME_HEADER,
    HANDSHAKE_KIND,
    FrameKind,
    decompress_payload,
    handshake_bytes,
    make_codec,
)

if TYPE_CHECKING:
    from collections.abc import Callable

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
small = st.integers(min_value=0, max_value=1 << 40)
blob = st.binary(max_size=64)
ids = st.frozensets(st.integers(min_value=1, max_value=1 << 20), max_size=5)
entries = st.lists(
    st.builds(Entry, term=small, index=small, kind=st.sampled_from(EntryKind), data=blob),
    max_size=4,
).map(tuple)
conf_states = st.builds(
    ConfState,
    voters=ids,
    learners=ids,
    voters_outgoing=ids,
    learners_next=ids,
    auto_leave=st.booleans(),
)
head = {"term": u64, "sender": u64, "to": u64}
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        RequestVote,
        **head,
        last_log_index=u64,
        last_log_term=u64,
        pre_vote=st.booleans(),
        transfer=st.booleans(),
    ),
    st.builds(RequestVoteResponse, **head, reject=st.booleans(), pre_vote=st.booleans()),
    st.builds(AppendEntries, **head, prev_index=u64, prev_term=u64, entries=entries, commit=u64),
    st.builds(
        AppendEntriesResponse,
        **head,
        index=u64,
        reject=st.booleans(),
        hint_index=u64,
        hint_term=u64,
    ),
    st.builds(Heartbeat, **head, commit=u64, context=blob),
    st.builds(HeartbeatResponse, **head, context=blob),
    st.builds(
        InstallSnapshot,
        **head,
        snapshot=st.builds(
            Snapshot,
            metadata=st.builds(SnapshotMetadata, index=u64, term=u64, conf_state=conf_states),
        ),
    ),
    st.builds(TimeoutNow, **head),
    st.builds(Propose, **head, entries=entries),
    st.builds(ReadIndex, **head, context=blob),
    st.builds(ReadIndexResponse, **head, index=u64, context=blob),
    st.builds(TransferLeader, **head, target=u64),
)
groups = st.one_of(u64, st.integers(min_value=0, max_value=(1 << 128) - 1))

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=10) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


def test_every_message_type_has_a_wire_number_and_a_codec() -> None:
    assert set(MESSAGE_CLASSES) == set(MessageType)
    for code in MessageType:
        assert int(code) == list(MessageType).index(code) + 1  # append-only, dense


@given(group=groups, message=messages)
@settings(max_examples=300)
def test_messages_round_trip(group: int, message: Message) -> None:
    for pack in (None, new_packer()):
        data = (
            encode_message(group, message) if pack is None else encode_message(group, message, pack)
        )
        assert decode_messages(b"\x91" + data) == [(group, message)]
        assert decode_message_item(msgpack.unpackb(data)) == (group, message)


@given(st.lists(st.tuples(groups, messages), max_size=20))
@settings(max_examples=100)
def test_batches_round_trip_in_order(batch: list[tuple[int, Message]]) -> None:
    parts = [encode_message(g, m) for g, m in batch]
    assert decode_messages(_array_header(len(parts)) + b"".join(parts)) == batch


DECODERS = [
    decode_messages,
    decode_handshake_body,
    decode_request,
    decode_response,
    decode_snapshot_begin,
    decode_snapshot_end,
    decode_snapshot_result,
    decode_stream_credit,
    decode_stream_reason,
]


@pytest.mark.parametrize("decode", DECODERS, ids=lambda f: f.__name__)
@given(data=st.binary(max_size=300))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_decoders_raise_only_protocol_error_on_random_bytes(
    decode: Callable[[bytes], object], data: bytes
) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


@pytest.mark.parametrize("decode", DECODERS, ids=lambda f: f.__name__)
@given(value=msgpack_values)
@settings(max_examples=300)
def test_decoders_raise_only_protocol_error_on_well_formed_msgpack(
    decode: Callable[[bytes], object], value: object
) -> None:
    with contextlib.suppress(ProtocolError):
        decode(msgpack.packb(value))


@given(
    group=groups,
    message=messages,
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
@settings(max_examples=500)
def test_corrupted_messages_decode_to_valid_messages_or_protocol_error(
    group: int, message: Message, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(b"\x91" + encode_message(group, message))
    for pos, byte in flips:
        data[pos % len(data)] = byte
    try:
        decoded = decode_messages(bytes(data))
    except ProtocolError:
        return
    for g, m in decoded:
        assert isinstance(g, int)
        assert g >= 0
        assert isinstance(m, Message)
        assert all(
            isinstance(getattr(m, f), int) and getattr(m, f) >= 0 for f in ("term", "sender", "to")
        )


def _feed_all(reader: FrameReader, data: bytes, cuts: list[int]) -> list[tuple[int, int, bytes]]:
    out = []
    pos = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        for kind, flags, payload in reader.feed(data[pos:cut]):
            out.append((kind, flags, bytes(payload)))
        pos = max(pos, cut)
    return out


@given(
    frames=st.lists(st.tuples(st.sampled_from(FrameKind), st.binary(max_size=3000)), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=30_000), max_size=6),
    scratch=st.sampled_from([1024, 4096, 256 * 1024]),
)
@settings(max_examples=200)
def test_the_frame_reader_reassembles_frames_across_any_split(
    frames: list[tuple[FrameKind, bytes]], cuts: list[int], scratch: int
) -> None:
    hello = handshake_bytes(1, b"\x80")
    wire = hello + b"".join(FRAME_HEADER.pack(len(p), k, 0) + p for k, p in frames)
    reader = FrameReader(1 << 20, handshake=True, scratch_bytes=scratch)
    got = _feed_all(reader, wire, cuts)
    assert got[0] == (HANDSHAKE_KIND, 1, b"\x80")
    assert got[1:] == [(int(k), 0, p) for k, p in frames]
    assert not reader.mid_frame


@given(
    data=st.binary(max_size=2000),
    handshake=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=4),
)
@settings(max_examples=500)
def test_the_frame_reader_raises_only_protocol_error_and_never_overallocates(
    data: bytes, handshake: bool, cuts: list[int]
) -> None:
    """Random bytes, in any split, either parse into frames within the limit or raise
    ProtocolError; payloads decoded per kind raise nothing else either."""
    limit = 4096
    reader = FrameReader(limit, handshake=handshake, scratch_bytes=1024)
    try:
        frames = _feed_all(reader, data, cuts)
    except ProtocolError:
        return
    codec = make_codec("lz4", 1)
    for kind, flags, payload in frames:
        assert len(payload) <= max(limit, 4096)
        try:
            body = memoryview(payload)
            if flags:
                body = decompress_payload(codec, body, limit)
            if kind == HANDSHAKE_KIND:
                decode_handshake_body(body)
            elif kind == FrameKind.MESSAGES:
                decode_messages(body)
            elif kind == FrameKind.REQUEST:
                decode_request(body)
            elif kind == FrameKind.RESPONSE:
                decode_response(body)
            elif kind == FrameKind.SNAPSHOT_BEGIN:
                decode_snapshot_begin(body)
            elif kind == FrameKind.SNAPSHOT_END:
                decode_snapshot_end(body)
        except ProtocolError:
            pass


@pytest.mark.parametrize("name", ["zstd", "lz4"])
@given(data=st.binary(max_size=2000), declared=st.integers(0, 1 << 32))
@settings(max_examples=200)
def test_decompression_of_hostile_payloads_raises_only_protocol_error(
    name: str, data: bytes, declared: int
) -> None:
    codec = make_codec(name, 3)
    payload = declared.to_bytes(5, "big")[1:] + data if declared < 1 << 32 else data
    try:
        out = decompress_payload(codec, memoryview(payload), 1 << 16)
    except ProtocolError:
        return
    assert len(out) <= 1 << 16


@pytest.mark.parametrize("name", ["zstd", "lz4"])
def test_compression_round_trips(name: str) -> None:
    codec = make_codec(name, 3)
    raw = b"raft " * 5000
    packed = len(raw).to_bytes(4, "big") + codec.compress(raw)
    assert bytes(decompress_payload(codec, memoryview(packed), 1 << 20)) == raw
    with pytest.raises(ProtocolError, match="frame_too_large"):
        decompress_payload(codec, memoryview(packed), 1000)
    with pytest.raises(ProtocolError):
        decompress_payload(None, memoryview(packed), 1 << 20)


def test_oversized_lengths_are_refused_before_allocation() -> None:
    reader = FrameReader(1 << 20, handshake=False)
    with pytest.raises(ProtocolError, match="frame_too_large"):
        reader.feed(FRAME_HEADER.pack(0xFFFF_FFFF, FrameKind.MESSAGES, 0))
    reader = FrameReader(1 << 20, handshake=True)
    with pytest.raises(ProtocolError, match="handshake_too_large"):
        reader.feed(b"CCAT\x00\x01\xff\xff")
    with pytest.raises(ProtocolError, match="bad_magic"):
        FrameReader(1 << 20, handshake=True).feed(b"GET ")


@pytest.mark.parametrize("n", [0, 15, 16, 65535, 65536])
def test_array_headers_match_msgpack(n: int) -> None:
    assert _array_header(n) == msgpack.packb([None] * n)[: len(_array_header(n))]
