"""Framing: the handshake prefix, frame headers and kinds, the incremental frame
reader, and frame compression.

What lives here: byte layouts (docs/wire.md) and `FrameReader`, a pure parser that
fills receive buffers the way `asyncio.BufferedProtocol` wants: small frames are
parsed in place from one scratch buffer, and a frame larger than the scratch buffer
gets a buffer of exactly its size, allocated only after its length passed the
`max_frame_bytes` check.

What must not: sockets, asyncio, timers, logging, msgpack schemas (those are in
`_codec.py`). Every malformed input raises `ProtocolError` with a short reason that
the endpoint counts.

Why hand-written: a length-prefixed frame reader is a few dozen lines; the libraries
that offer one (e.g. asyncio streams' readexactly) copy every frame twice and cannot
check a length before allocating.
"""

from __future__ import annotations

import importlib
import struct
from enum import IntEnum
from typing import Final, Protocol

from copycat.errors import ProtocolError

MAGIC: Final = b"CCAT"
"""First bytes of every handshake, both ways."""

PROTOCOL_VERSION: Final = 1
"""The wire version this code speaks; docs/wire.md, "Versioning"."""

SUPPORTED_VERSIONS: Final = (1, 1)
"""Lowest and highest protocol versions this code accepts from a peer."""

HANDSHAKE_PREFIX: Final = struct.Struct(">4sHH")
"""magic (4 bytes), protocol version (u16), body length (u16), then the msgpack body."""

MAX_HANDSHAKE_BODY_BYTES: Final = 4096

FRAME_HEADER: Final = struct.Struct(">IBB")
"""payload length (u32, excluding this header), kind (u8), flags (u8)."""

FRAME_HEADER_BYTES: Final = FRAME_HEADER.size

COMPRESSED_PREFIX: Final = struct.Struct(">I")
"""A compressed payload starts with the uncompressed length (u32)."""

STREAM_ID: Final = struct.Struct(">Q")
"""A SNAPSHOT_CHUNK payload starts with its stream id (u64), then the raw chunk."""

FLAG_COMPRESSED: Final = 0x01
KNOWN_FLAGS: Final = FLAG_COMPRESSED

SCRATCH_BYTES: Final = 256 * 1024
"""Receive buffer for small frames; a frame larger than this gets a buffer of its own."""


class FrameKind(IntEnum):
    """Frame kinds. Append-only table (docs/wire.md); a new kind needs a new version."""

    MESSAGES = 1
    REQUEST = 2
    RESPONSE = 3
    SNAPSHOT_BEGIN = 4
    SNAPSHOT_CHUNK = 5
    SNAPSHOT_END = 6
    SNAPSHOT_CREDIT = 7
    SNAPSHOT_RESULT = 8
    SNAPSHOT_ABORT = 9
    KEEPALIVE = 10
    GOAWAY = 11


HANDSHAKE_KIND: Final = 0
"""Kind reported by `FrameReader` for the handshake message (not a wire kind)."""

_KINDS: Final = frozenset(int(k) for k in FrameKind)


def frame_header(kind: int, flags: int, length: int) -> bytes:
    return FRAME_HEADER.pack(length, kind, flags)


def handshake_bytes(version: int, body: bytes) -> bytes:
    if len(body) > MAX_HANDSHAKE_BODY_BYTES:
        raise ValueError("handshake body too large")
    return HANDSHAKE_PREFIX.pack(MAGIC, version, len(body)) + body


Frame = tuple[int, int, memoryview]
"""(kind, flags, payload). For the handshake: (HANDSHAKE_KIND, version, body). The
payload view is valid only until the reader's next `get_buffer` call."""


class FrameReader:
    """Incremental parser of one connection's inbound bytes.

    Use as the buffer half of an `asyncio.BufferedProtocol`: write received bytes into
    `get_buffer()`, then call `buffer_updated(n)`, which returns the frames completed.
    With `handshake=True` the first message parsed is a handshake (magic, version,
    body); frames follow. `feed()` does both steps for tests and fuzzing.
    """

    __slots__ = (
        "_big",
        "_big_filled",
        "_big_flags",
        "_big_kind",
        "_buf",
        "_end",
        "_handshake",
        "_max_frame_bytes",
        "_start",
        "_view",
    )

    def __init__(
        self, max_frame_bytes: int, *, handshake: bool, scratch_bytes: int = SCRATCH_BYTES
    ) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._handshake = handshake
        self._buf = bytearray(max(scratch_bytes, 1024))
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._big: bytearray | None = None
        self._big_filled = 0
        self._big_kind = 0
        self._big_flags = 0

    @property
    def mid_frame(self) -> bool:
        """Whether part of a frame (or handshake) has arrived but not all of it."""
        return self._big is not None or self._end > self._start

    def set_max_frame_bytes(self, limit: int) -> None:
        self._max_frame_bytes = limit

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        big = self._big
        if big is not None:
            return memoryview(big)[self._big_filled :]
        if self._end == len(self._buf):
            self._compact()
        return self._view[self._end :]

    def _compact(self) -> None:
        start, end = self._start, self._end
        if start:
            self._buf[: end - start] = self._view[start:end]
            self._start, self._end = 0, end - start

    def buffer_updated(self, nbytes: int) -> list[Frame]:
        if self._big is not None:
            self._big_filled += nbytes
            if self._big_filled < len(self._big):
                return []
            frame = (self._big_kind, self._big_flags, memoryview(self._big))
            self._big = None
            return [frame]
        self._end += nbytes
        return self._parse()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Hand `data` to the reader as if received; returns the frames completed,
        their payloads copied to bytes-backed views (safe to keep)."""
        frames: list[Frame] = []
        data = memoryview(data)
        while data:
            buf = self.get_buffer(len(data))
            n = min(len(buf), len(data))
            buf[:n] = data[:n]
            data = data[n:]
            for kind, flags, payload in self.buffer_updated(n):
                frames.append((kind, flags, memoryview(bytes(payload))))
        return frames

    def _parse(self) -> list[Frame]:
        frames: list[Frame] = []
        view = self._view
        start, end = self._start, self._end
        header_bytes = FRAME_HEADER_BYTES
        unpack_header = FRAME_HEADER.unpack_from
        max_frame = self._max_frame_bytes
        try:
            while True:
                avail = end - start
                if self._handshake:
                    if avail < HANDSHAKE_PREFIX.size:
                        if avail and view[start : start + min(avail, 4)] != MAGIC[: min(avail, 4)]:
                            raise ProtocolError("bad_magic", "not a CopyCat handshake")
                        break
                    magic, version, length = HANDSHAKE_PREFIX.unpack_from(view, start)
                    if magic != MAGIC:
                        raise ProtocolError("bad_magic", "not a CopyCat handshake")
                    if length > MAX_HANDSHAKE_BODY_BYTES:
                        raise ProtocolError(
                            "handshake_too_large", f"handshake body of {length} bytes"
                        )
                    total = HANDSHAKE_PREFIX.size + length
                    if avail < total:
                        break
                    frames.append(
                        (
                            HANDSHAKE_KIND,
                            version,
                            view[start + HANDSHAKE_PREFIX.size : start + total],
                        )
                    )
                    start += total
                    self._handshake = False
                    continue
                if avail < header_bytes:
                    break
                length, kind, flags = unpack_header(view, start)
                if length > max_frame:
                    raise ProtocolError(
                        "frame_too_large", f"frame of {length} bytes exceeds {max_frame}"
                    )
                if kind not in _KINDS:
                    raise ProtocolError("unknown_kind", f"unknown frame kind {kind}")
                if flags & ~KNOWN_FLAGS:
                    raise ProtocolError("bad_flags", f"unknown frame flags {flags:#x}")
                total = header_bytes + length
                if avail < total:
                    if total > len(self._buf):
                        # Too big for the scratch buffer: give it a buffer of its own,
                        # now that its length passed the limit check.
                        big = bytearray(length)
                        have = avail - header_bytes
                        big[:have] = view[start + header_bytes : end]
                        self._big = big
                        self._big_filled = have
                        self._big_kind = kind
                        self._big_flags = flags
                        start = end
                    break
                frames.append((kind, flags, view[start + header_bytes : start + total]))
                start += total
        finally:
            if start == end:
                start = end = 0
            self._start, self._end = start, end
        return frames


# ---------------------------------------------------------------- compression


class Codec(Protocol):
    """A negotiated frame compression codec."""

    name: str

    def compress(self, data: bytes | bytearray | memoryview) -> bytes: ...

    def decompress(self, data: memoryview, size: int) -> bytes:
        """Decompress to exactly `size` bytes (already checked against the frame
        limit), allocating no more than that; ProtocolError on anything else."""
        ...


class _Zstd:
    name = "zstd"

    def __init__(self, level: int) -> None:
        import zstandard

        self._zstd = zstandard
        self._c = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._d = zstandard.ZstdDecompressor()

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        out: bytes = self._c.compress(data)
        return out

    def decompress(self, data: memoryview, size: int) -> bytes:
        zstd = self._zstd
        try:
            # Check the frame's declared size before the library allocates for it.
            params = zstd.get_frame_parameters(data)
            if params.content_size != size:
                raise ProtocolError("bad_compression", "zstd content size mismatch")
            out: bytes = self._d.decompress(data, max_output_size=size)
        except zstd.ZstdError as exc:
            raise ProtocolError("bad_compression", f"zstd: {exc}") from None
        if len(out) != size:
            raise ProtocolError("bad_compression", "zstd output size mismatch")
        return out


class _Lz4:
    name = "lz4"

    def __init__(self) -> None:
        # Imported by name: lz4 ships no type information.
        self._block = importlib.import_module("lz4.block")

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        out: bytes = self._block.compress(data, store_size=False)
        return out

    def decompress(self, data: memoryview, size: int) -> bytes:
        try:
            out: bytes = self._block.decompress(data, uncompressed_size=size)
        except (self._block.LZ4BlockError, ValueError) as exc:
            raise ProtocolError("bad_compression", f"lz4: {exc}") from None
        if len(out) != size:
            raise ProtocolError("bad_compression", "lz4 output size mismatch")
        return out


def available_codecs(preferred: tuple[str, ...]) -> tuple[str, ...]:
    """The codecs of `preferred` whose packages are installed, in the same order."""
    out = []
    for name in preferred:
        try:
            if name == "zstd":
                import zstandard  # noqa: F401
            elif name == "lz4":
                importlib.import_module("lz4.block")
            else:
                continue
        except ImportError:
            continue
        out.append(name)
    return tuple(out)


def make_codec(name: str, level: int) -> Codec:
    if name == "zstd":
        return _Zstd(level)
    if name == "lz4":
        return _Lz4()
    raise ValueError(f"unknown codec {name!r}")


def decompress_payload(
    codec: Codec | None, payload: memoryview, max_frame_bytes: int
) -> memoryview:
    """The payload of a frame with FLAG_COMPRESSED, decompressed; ProtocolError when
    no codec was negotiated or the declared size is over the limit."""
    if codec is None:
        raise ProtocolError("bad_compression", "compressed frame but no codec negotiated")
    if len(payload) < COMPRESSED_PREFIX.size:
        raise ProtocolError("bad_compression", "compressed frame shorter than its prefix")
    (size,) = COMPRESSED_PREFIX.unpack_from(payload)
    if size > max_frame_bytes:
        raise ProtocolError(
            "frame_too_large", f"decompressed size {size} exceeds {max_frame_bytes}"
        )
    return memoryview(codec.decompress(payload[COMPRESSED_PREFIX.size :], size))
