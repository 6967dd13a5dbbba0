"""The transport endpoint: one listening socket, one connection per peer node carrying
the raft messages of every group, requests/responses and snapshot streams.

What lives here: `Endpoint` (the public face), `_Peer` (per-node send queue, dialer,
backoff), `_Connection` (an `asyncio.BufferedProtocol`: handshake, frame dispatch,
timeouts, write-side flow control) and the snapshot stream state on both sides.

What must not: raft logic (the host decides what to send and what a report means),
blocking calls on the event loop (file reads go through `asyncio.to_thread`), or
unbounded buffers: every queue here is bounded by a `TransportConfig` knob or by
credits the receiver grants.

Contract with the host (also in docs/wire.md):
1. Call `send(group, message)` for every message raft's `Ready` hands out except
   `InstallSnapshot`, which goes through `send_snapshot()` (its data is streamed).
2. `send()` never blocks and never raises for network reasons; a message that cannot
   be sent is dropped and the peer is reported through `on_unreachable(peer, groups)`
   on a later event-loop turn. Call raft's `report_unreachable(peer)` for those groups
   (every group shared with the peer when `groups` is None).
3. Await `send_snapshot()` and call raft's `report_snapshot(peer, success=...)` with
   its outcome: it returns once the receiver's handler installed the snapshot, and
   raises `SnapshotStreamError` (or `PeerUnreachableError`) otherwise.
4. `on_messages(peer, envelopes)` runs on the event loop for each batch received;
   it must not block. Messages of one peer arrive in the order that peer sent them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import itertools
import logging
import math
import random
import re
import socket
import ssl
import struct
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, final

from copycat import errors
from copycat._ids import group_name
from copycat._net import is_loopback
from copycat.errors import (
    AddressInUseError,
    ClosedError,
    ConfigError,
    CopyCatError,
    HandshakeError,
    MessageTooLargeError,
    PeerUnreachableError,
    ProtocolError,
    RemoteError,
    RequestTimeoutError,
    SnapshotStreamError,
    TransportError,
)
from copycat.raft import InstallSnapshot, Message, Snapshot
from copycat.transport._codec import (
    Envelope,
    ErrorFields,
    decode_handshake_body,
    decode_messages,
    decode_request,
    decode_response,
    decode_snapshot_begin,
    decode_snapshot_end,
    decode_snapshot_result,
    decode_stream_credit,
    decode_stream_reason,
    encode_handshake_body,
    encode_message,
    encode_pair,
    encode_request,
    encode_response_error,
    encode_response_ok,
    encode_snapshot_begin,
    encode_snapshot_end,
    encode_snapshot_result,
    handshake_field,
    new_packer,
    unpack,
)
from copycat.transport._config import MIB, MIN_FRAME_BYTES, TransportConfig
from copycat.transport._faults import FaultHooks
from copycat.transport._frames import (
    COMPRESSED_PREFIX,
    FLAG_COMPRESSED,
    FRAME_HEADER,
    HANDSHAKE_KIND,
    PROTOCOL_VERSION,
    STREAM_ID,
    SUPPORTED_VERSIONS,
    Codec,
    FrameKind,
    FrameReader,
    available_codecs,
    decompress_payload,
    handshake_bytes,
    make_codec,
)
from copycat.transport._stats import Counters, TransportStats

if TYPE_CHECKING:
    from pathlib import Path

logger: Final = logging.getLogger("copycat.transport")
_T = TypeVar("_T")

MessageHandler = Callable[[int, list[Envelope]], None]
"""`(peer, envelopes)`: a batch of raft messages received from node `peer`, in order."""

UnreachableHandler = Callable[[int, frozenset[int] | None], None]
"""`(peer, groups)`: messages of `groups` to `peer` were dropped (None: the connection
dropped; every group shared with `peer` is affected). Call raft's report_unreachable."""

SnapshotHandler = Callable[[int, int, InstallSnapshot, AsyncIterator[bytes]], Awaitable[None]]
"""`(peer, group, message, chunks)`: install the snapshot whose metadata is in
`message` (its `snapshot.data` is empty) from `chunks`. Return once it is durably
installed; raise to refuse it. The sender's `send_snapshot` learns either outcome."""

RequestHandler = Callable[[int, bytes], Awaitable[bytes]]
"""`(peer, body) -> response body`. A `CopyCatError` raised here reaches the caller as
the same exception type (with its scalar attributes); any other error as RemoteError."""

_HANDSHAKE: Final = 0
_OPEN: Final = 2
_CLOSED: Final = 3

_GOAWAY_DUPLICATE: Final = "duplicate connection"
_MSG_FRAME_OVERHEAD: Final = 5  # msgpack array header, at most
_FRAME_MESSAGES: Final = int(FrameKind.MESSAGES)
_FRAME_HEADER_PACK: Final = FRAME_HEADER.pack
_CHUNK_HEADER: Final = struct.Struct(">IBBQ")  # frame header + stream id
_U16: Final = struct.Struct(">BH")
_U32: Final = struct.Struct(">BI")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return _U16.pack(0xDC, n)
    return _U32.pack(0xDD, n)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when it is installed, asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run `main` to completion on a new event loop from `new_event_loop()` (uvloop
    when installed), like `asyncio.run`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


async def read_file_chunks(path: str | Path, chunk_bytes: int = MIB) -> AsyncIterator[bytes]:
    """The bytes of the file at `path` in chunks of `chunk_bytes`, read off the event
    loop (one thread hop per chunk): a snapshot source for `Endpoint.send_snapshot`."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            chunk = await asyncio.to_thread(f.read, chunk_bytes)
            if not chunk:
                return
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerStatus:
    """What the endpoint knows about one peer right now."""

    node_id: int
    address: tuple[str, int] | None
    connected: bool
    queued_msgs: int
    queued_bytes: int
    write_paused: bool


_PORT = re.compile(r":\d+(?=\)?$)")
"""The port at the end of "host:port" or "node N (host:port)"."""


class _HostileLog:
    """Logs a refusal at most once per (peer host, reason) per interval: the port is
    left out of the key, as a client that reconnects comes from a new one each time."""

    __slots__ = ("_interval", "_last", "_suppressed")

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def log(self, now: float, who: str, reason: str, message: str) -> None:
        key = (_PORT.sub("", who), reason)
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) > 4096:
            self._last.clear()
            self._suppressed.clear()
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        logger.warning("refused input from %s [%s]: %s%s", who, reason, message, more)


@final
class _Peer:
    """A remote node: its address, the connection in use, and the send queue."""

    __slots__ = (
        "address",
        "backoff_until",
        "conn",
        "dial_task",
        "down",
        "eager",
        "ever_connected",
        "flush_scheduled",
        "groups",
        "node_id",
        "parts",
        "queued_bytes",
        "removed",
        "up",
        "wanted",
    )

    def __init__(self, node_id: int, address: tuple[str, int] | None, eager: bool) -> None:
        self.node_id = node_id
        self.address = address
        self.eager = eager
        self.conn: _Connection | None = None
        # parts[0] is a placeholder for the frame header, so a flush joins once.
        self.parts: list[bytes] = [b""]
        self.queued_bytes = 0
        self.groups: set[int] = set()
        self.flush_scheduled = False
        self.dial_task: asyncio.Task[None] | None = None
        self.up = asyncio.Event()
        self.down = asyncio.Event()
        self.down.set()
        self.wanted = asyncio.Event()
        self.backoff_until = 0.0
        self.ever_connected = False
        self.removed = False


class _Pacer:
    """How many chunks a snapshot stream keeps unacknowledged: a delay-based window, after
    LEDBAT (RFC 6817), so that a snapshot fills the link without filling its queues.

    A credit comes back when the receiver has taken a chunk; the time since that chunk
    was written, less the least such time seen (the path's own), is the queueing delay
    the stream adds. Below `target` the window grows (doubling per round trip until the
    first time the target is reached, then one chunk per round trip); above it, it
    shrinks in proportion, and is halved (once per round trip) above twice the target.
    Other groups' messages share the connection and wait behind the chunks in flight:
    this bounds that wait to about the target plus a chunk's time on the wire, where
    filling the receiver's credits could queue seconds of data on a slow link. We wrote
    it ourselves: it is a page, and it runs over a TCP stream no library paces."""

    __slots__ = ("_base", "_halved_at", "_slow_start", "_target_floor", "sent", "window")

    MIN_WINDOW: Final = 2.0
    """Two chunks in flight: one arriving while the next is on the wire."""

    def __init__(self, target_floor_s: float) -> None:
        self.window = self.MIN_WINDOW
        self.sent: collections.deque[float] = collections.deque()
        """Write time of each chunk not yet credited, oldest first."""
        self._base = math.inf
        self._slow_start = True
        self._halved_at = -math.inf
        self._target_floor = target_floor_s

    def open(self) -> bool:
        return len(self.sent) < self.window

    def credited(self, now: float) -> None:
        if not self.sent:
            return
        sample = now - self.sent.popleft()
        self._base = min(self._base, sample)
        target = max(self._target_floor, 0.25 * self._base)
        queued = sample - self._base
        if queued > 2 * target:
            self._slow_start = False
            if now - self._halved_at > sample:
                self._halved_at = now
                self.window = max(self.MIN_WINDOW, self.window / 2)
            return
        if self._slow_start and queued < target:
            self.window += 1.0  # one more per credit: doubles per round trip
            return
        self._slow_start = False
        self.window = max(self.MIN_WINDOW, self.window + (target - queued) / target / self.window)


class _OutStream:
    __slots__ = ("credits", "pacer", "result", "wake")

    def __init__(self, loop: asyncio.AbstractEventLoop, target_floor_s: float) -> None:
        self.credits = 0
        self.pacer = _Pacer(target_floor_s)
        self.wake = asyncio.Event()
        self.result: asyncio.Future[tuple[bool, str]] = loop.create_future()

    def finish(self, ok: bool, message: str) -> None:
        if not self.result.done():
            self.result.set_result((ok, message))
        self.wake.set()


class _End:
    pass


_END: Final = _End()


class _InStream:
    __slots__ = ("complete", "conn", "granted", "queue", "received", "stream_id", "total")

    def __init__(self, conn: _Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.queue: asyncio.Queue[bytes | _End | str] = asyncio.Queue()
        self.granted = 0
        self.received = 0
        self.total = 0
        self.complete = False

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        conn = self.conn
        timeout_s = conn.ep.config.snapshot_timeout_s
        while True:
            try:
                async with asyncio.timeout(timeout_s):
                    item = await self.queue.get()
            except TimeoutError:
                raise SnapshotStreamError(
                    conn.peer_id, f"no chunk for {timeout_s} s; stream abandoned"
                ) from None
            if isinstance(item, _End):
                self.complete = True
                return
            if isinstance(item, str):
                raise SnapshotStreamError(conn.peer_id, item)
            self.granted += 1
            conn.write_frame(FrameKind.SNAPSHOT_CREDIT, encode_pair(self.stream_id, 1))
            yield item


class _Connection(asyncio.BufferedProtocol):
    """One TCP (or TLS) connection with a peer node, either direction."""

    def __init__(
        self, ep: Endpoint, *, outbound: bool, expected_peer: int = 0, tls_accepted: bool = False
    ) -> None:
        self.ep = ep
        self.tls_accepted = tls_accepted
        self.outbound = outbound
        self.expected_peer = expected_peer
        self.peer_id = expected_peer
        self.state = _HANDSHAKE
        self.reader = FrameReader(ep.config.max_frame_bytes, handshake=True)
        self.transport: asyncio.Transport | None = None
        self.remote = "?"
        now = ep.loop.time()
        self.created = now
        self.last_recv = now
        self.last_send = now
        self.frame_started: float | None = None
        self.paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.handshake_done: asyncio.Future[None] = ep.loop.create_future()
        self.codec: Codec | None = None
        self.compress_min = ep.config.compression_min_bytes
        self.send_max_frame = ep.config.max_frame_bytes
        self.requests: dict[int, tuple[str, asyncio.Future[bytes]]] = {}
        self.inflight_requests = 0
        self.out_streams: dict[int, _OutStream] = {}
        self.in_streams: dict[int, _InStream] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.counted_pending = False
        self.closing_locally = False

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        transport = cast("asyncio.Transport", base)
        ep = self.ep
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.remote = f"{peer[0]}:{peer[1]}"
        ep.connections.add(self)
        transport.set_write_buffer_limits(high=ep.config.write_buffer_high_bytes)
        if ep.closed:
            transport.abort()
            return
        if not self.outbound:
            if self.tls_accepted:
                self.counted_pending = True  # the accept loop counted it already
                return
            if ep.pending_handshakes >= ep.config.max_pending_handshakes:
                self.refuse("too_many_handshakes", "too many connections in their handshake")
                return
            ep.pending_handshakes += 1
            self.counted_pending = True
            return
        self._send_hello()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        ep = self.ep
        ep.counters.bytes_received += nbytes
        try:
            frames = self.reader.buffer_updated(nbytes)
        except ProtocolError as exc:
            self.refuse(exc.reason, str(exc))
            return
        now = ep.loop.time()
        self.last_recv = now
        if frames:
            self.frame_started = now if self.reader.mid_frame else None
            self._handle_frames(frames)
        elif self.frame_started is None and self.reader.mid_frame:
            self.frame_started = now

    def eof_received(self) -> bool | None:
        if self.reader.mid_frame and self.state != _CLOSED:
            self.refuse("truncated", "connection closed in the middle of a frame")
        return None

    def pause_writing(self) -> None:
        self.paused = True
        self.writable.clear()

    def resume_writing(self) -> None:
        self.paused = False
        self.writable.set()
        peer = self.ep.peers.get(self.peer_id)
        if peer is not None and peer.conn is self:
            self.ep.schedule_flush(peer)

    def connection_lost(self, exc: Exception | None) -> None:
        ep = self.ep
        was = self.state
        self.state = _CLOSED
        ep.connections.discard(self)
        self.writable.set()
        if self.counted_pending:
            self.counted_pending = False
            ep.pending_handshakes -= 1
        if not self.handshake_done.done():
            self.handshake_done.set_exception(
                PeerUnreachableError(self.peer_id, f"connection to {self.remote} closed")
            )
            self.handshake_done.exception()  # mark retrieved
        if was == _OPEN and not self.closing_locally and exc is not None:
            logger.info("connection with node %d (%s) lost: %s", self.peer_id, self.remote, exc)
        lost = PeerUnreachableError(self.peer_id, f"connection to node {self.peer_id} lost")
        for _method, fut in self.requests.values():
            if not fut.done():
                fut.set_exception(lost)
        self.requests.clear()
        for out in self.out_streams.values():
            out.finish(False, "connection lost")
        for inbound in self.in_streams.values():
            inbound.queue.put_nowait("connection lost")
        for task in list(self.tasks):
            # Snapshot installs see the abort through their stream; request handlers
            # have nobody left to answer.
            if not task.done() and not getattr(task, "_copycat_snapshot", False):
                task.cancel()
        if was == _OPEN:
            ep.detach(self)

    # ------------------------------------------------------------ closing

    def refuse(self, reason: str, message: str) -> None:
        """Hostile or broken input: count, log (rate-limited), drop the connection."""
        ep = self.ep
        ep.counters.refuse(reason)
        who = f"node {self.peer_id} ({self.remote})" if self.peer_id else self.remote
        ep.hostile_log.log(ep.loop.time(), who, reason, message)
        self.abort()

    def abort(self) -> None:
        self.closing_locally = True
        if self.transport is not None and self.state != _CLOSED:
            self.transport.abort()
        if self.transport is None:
            self.state = _CLOSED

    def close(self, reason: str) -> None:
        """Close gracefully: queued bytes are written first; the peer learns why."""
        if self.state == _CLOSED or self.transport is None:
            return
        self.closing_locally = True
        if self.state == _OPEN:
            self.write_frame(FrameKind.GOAWAY, encode_pair(0, reason))
        self.transport.close()

    # ------------------------------------------------------------ writing

    def write_frame(self, kind: int, payload: bytes) -> None:
        transport = self.transport
        if transport is None or self.state != _OPEN or transport.is_closing():
            return
        flags = 0
        codec = self.codec
        if codec is not None and len(payload) >= self.compress_min:
            packed = codec.compress(payload)
            if len(packed) + COMPRESSED_PREFIX.size < len(payload):
                payload = COMPRESSED_PREFIX.pack(len(payload)) + packed
                flags = FLAG_COMPRESSED
        data = _FRAME_HEADER_PACK(len(payload), kind, flags) + payload
        transport.write(data)
        counters = self.ep.counters
        counters.frames_sent += 1
        counters.bytes_sent += len(data)
        self.last_send = self.ep.loop.time()

    def write_chunk(self, stream_id: int, chunk: bytes | memoryview) -> None:
        transport = self.transport
        if transport is None or self.state != _OPEN or transport.is_closing():
            return
        codec = self.codec
        if codec is not None and len(chunk) >= self.compress_min:
            self.write_frame(FrameKind.SNAPSHOT_CHUNK, STREAM_ID.pack(stream_id) + bytes(chunk))
            return
        head = _CHUNK_HEADER.pack(len(chunk) + 8, FrameKind.SNAPSHOT_CHUNK, 0, stream_id)
        transport.write(head)
        transport.write(chunk)
        counters = self.ep.counters
        counters.frames_sent += 1
        counters.bytes_sent += len(head) + len(chunk)
        self.last_send = self.ep.loop.time()

    def write_messages(self, parts: list[bytes], count: int, size: int) -> None:
        """Write `parts[1:]` (encoded messages) as MESSAGES frames; parts[0] is free."""
        limit = self.send_max_frame - _MSG_FRAME_OVERHEAD
        if size > limit:
            self._write_split(parts, limit)
            return
        transport = self.transport
        if transport is None or self.state != _OPEN or transport.is_closing():
            return
        codec = self.codec
        head = _array_header(count)
        if codec is not None and size >= self.compress_min:
            parts[0] = head
            self.write_frame(_FRAME_MESSAGES, b"".join(parts))
        else:
            parts[0] = _FRAME_HEADER_PACK(len(head) + size, _FRAME_MESSAGES, 0) + head
            data = b"".join(parts)
            transport.write(data)
            counters = self.ep.counters
            counters.frames_sent += 1
            counters.bytes_sent += len(data)
            self.last_send = self.ep.loop.time()
        self.ep.counters.messages_sent += count

    def _write_split(self, parts: list[bytes], limit: int) -> None:
        batch: list[bytes] = [b""]
        size = 0
        for part in itertools.islice(parts, 1, None):
            n = len(part)
            if n > limit:
                # The peer's limit is below ours (checked in send()): it cannot take it.
                logger.error(
                    "dropping a %d-byte message to node %d: over its frame limit %d",
                    n,
                    self.peer_id,
                    limit,
                )
                self.ep.counters.messages_dropped_overflow += 1
                continue
            if size + n > limit:
                self.write_messages(batch, len(batch) - 1, size)
                batch = [b""]
                size = 0
            batch.append(part)
            size += n
        if len(batch) > 1:
            self.write_messages(batch, len(batch) - 1, size)

    async def wait_writable(self) -> None:
        if self.paused:
            await self.writable.wait()
        if self.state != _OPEN:
            raise PeerUnreachableError(self.peer_id, f"connection to node {self.peer_id} lost")

    # ------------------------------------------------------------ handshake

    def _hello_body(self) -> dict[str, Any]:
        ep = self.ep
        return {
            "cluster": ep.config.cluster_name,
            "node": ep.node_id,
            "peer": self.expected_peer,
            "compression": list(ep.codecs),
            "max_frame": ep.config.max_frame_bytes,
        }

    def _write_handshake(self, body: dict[str, Any]) -> None:
        if self.transport is not None:
            data = handshake_bytes(PROTOCOL_VERSION, encode_handshake_body(body))
            self.transport.write(data)
            self.ep.counters.bytes_sent += len(data)

    def _send_hello(self) -> None:
        self._write_handshake(self._hello_body())

    def _reply(self, ok: bool, reason: str, codec: str | None = None) -> None:
        ep = self.ep
        body = {
            "ok": ok,
            "reason": reason,
            "cluster": ep.config.cluster_name,
            "node": ep.node_id,
            "compression": codec or "",
            "max_frame": ep.config.max_frame_bytes,
            "versions": list(SUPPORTED_VERSIONS),
        }
        self._write_handshake(body)

    def _refuse_handshake(self, reason: str, message: str) -> None:
        """Tell the dialer why (in the reply) and close after it is written."""
        ep = self.ep
        ep.counters.refuse(reason)
        ep.hostile_log.log(ep.loop.time(), self.remote, reason, f"handshake refused: {message}")
        self._reply(False, f"{reason}: {message}")
        self.closing_locally = True
        if self.transport is not None:
            self.transport.close()

    def _on_hello(self, version: int, body_view: memoryview) -> None:
        ep = self.ep
        lo, hi = SUPPORTED_VERSIONS
        if not lo <= version <= hi:
            self._refuse_handshake(
                "version",
                f"protocol version {version} is not supported (this node speaks {lo}..{hi})",
            )
            return
        body = decode_handshake_body(body_view)
        cluster = handshake_field(body, "cluster", str)
        node = handshake_field(body, "node", int)
        expected = handshake_field(body, "peer", int, 0)
        offers = handshake_field(body, "compression", list, [])
        max_frame = handshake_field(body, "max_frame", int)
        if cluster != ep.config.cluster_name:
            self._refuse_handshake(
                "cluster_name",
                f"cluster name {cluster[:128]!r} is not this cluster's {ep.config.cluster_name!r}",
            )
            return
        if not 0 < node < 1 << 64 or node == ep.node_id:
            self._refuse_handshake("node_id", f"node id {node} is invalid or this node's own")
            return
        if expected not in (0, ep.node_id):
            self._refuse_handshake(
                "node_id", f"dialer expected node {expected}, this is node {ep.node_id}"
            )
            return
        if max_frame < MIN_FRAME_BYTES:
            self._refuse_handshake(
                "bad_handshake", f"max_frame {max_frame} below {MIN_FRAME_BYTES}"
            )
            return
        mismatch = self._certificate_mismatch(node)
        if mismatch is not None:
            self._refuse_handshake("certificate", mismatch)
            return
        self.peer_id = node
        chosen = next((c for c in ep.codecs if c in offers), None)
        if not ep.accepts(self):
            # The pair already has the connection the rule keeps: not hostile.
            self._reply(False, _GOAWAY_DUPLICATE)
            self.closing_locally = True
            if self.transport is not None:
                self.transport.close()
            return
        self._reply(True, "", chosen)
        self._open(chosen, max_frame)
        ep.counters.connections_accepted += 1

    def _on_welcome(self, version: int, body_view: memoryview) -> None:
        ep = self.ep
        body = decode_handshake_body(body_view)
        ok = handshake_field(body, "ok", bool)
        reason = handshake_field(body, "reason", str, "")
        node = handshake_field(body, "node", int, 0)
        if not ok:
            self._fail_dial(
                HandshakeError(
                    self.expected_peer,
                    f"node {self.expected_peer} at {self.remote} refused our handshake: {reason[:300]}",
                ),
                count=None if reason == _GOAWAY_DUPLICATE else "peer_refused",
            )
            return
        cluster = handshake_field(body, "cluster", str)
        codec = handshake_field(body, "compression", str, "")
        max_frame = handshake_field(body, "max_frame", int)
        problem = None
        if version != PROTOCOL_VERSION:
            problem = ("version", f"peer answered with protocol version {version}")
        elif cluster != ep.config.cluster_name:
            problem = ("cluster_name", f"peer is in cluster {cluster[:128]!r}")
        elif node != self.expected_peer:
            problem = ("node_id", f"dialed node {self.expected_peer} but node {node} answered")
        elif codec and codec not in ep.codecs:
            problem = ("bad_handshake", f"peer chose codec {codec[:20]!r} we did not offer")
        elif max_frame < MIN_FRAME_BYTES:
            problem = ("bad_handshake", f"peer max_frame {max_frame} too small")
        elif (mismatch := self._certificate_mismatch(node)) is not None:
            problem = ("certificate", mismatch)
        if problem is not None:
            reason_key, message = problem
            self._fail_dial(
                HandshakeError(self.expected_peer, f"refusing node at {self.remote}: {message}"),
                count=reason_key,
            )
            return
        self._open(codec or None, max_frame)
        ep.counters.connections_dialed += 1

    def _certificate_mismatch(self, node: int) -> str | None:
        """With `TLSConfig.bind_node_id`: why the peer's certificate does not name
        `node` (subject common name `node-<id>`), or None when it does."""
        tls = self.ep.config.tls
        if tls is None or not tls.bind_node_id:
            return None
        cert = self.transport.get_extra_info("peercert") if self.transport is not None else None
        names = [
            value
            for rdn in (cert or {}).get("subject", ())
            for key, value in rdn
            if key == "commonName"
        ]
        if names != [f"node-{node}"]:
            return f"peer claims node {node} but its certificate names {names or 'nobody'}"
        return None

    def _fail_dial(self, exc: HandshakeError, count: str | None) -> None:
        if count is not None:
            self.ep.counters.refuse(count)
        if not self.handshake_done.done():
            self.handshake_done.set_exception(exc)
        self.abort()

    def _open(self, codec: str | None, peer_max_frame: int) -> None:
        ep = self.ep
        if self.counted_pending:
            self.counted_pending = False
            ep.pending_handshakes -= 1
        self.state = _OPEN
        self.codec = make_codec(codec, ep.config.compression_level) if codec else None
        self.send_max_frame = min(ep.config.max_frame_bytes, peer_max_frame)
        self.last_send = self.last_recv = ep.loop.time()
        if not self.handshake_done.done():
            self.handshake_done.set_result(None)
        ep.attach(self)

    # ------------------------------------------------------------ frame dispatch

    def _handle_frames(self, frames: list[tuple[int, int, memoryview]]) -> None:
        ep = self.ep
        batch: list[Envelope] | None = None
        try:
            for kind, flags, payload in frames:
                if self.state != _OPEN:
                    if self.state == _CLOSED:
                        return
                    if kind != HANDSHAKE_KIND:
                        raise ProtocolError("bad_handshake", "frame before the handshake")
                    if self.outbound:
                        self._on_welcome(flags, payload)
                    else:
                        self._on_hello(flags, payload)
                    continue
                if kind == HANDSHAKE_KIND:
                    raise ProtocolError("bad_handshake", "second handshake")
                if flags:
                    payload = decompress_payload(self.codec, payload, ep.config.max_frame_bytes)
                if kind == _FRAME_MESSAGES:
                    envelopes = decode_messages(payload)
                    if batch is None:
                        batch = envelopes
                    else:
                        batch.extend(envelopes)
                    continue
                if batch:
                    ep.deliver(self, batch)
                    batch = None
                self._handle_control(kind, payload)
            ep.counters.frames_received += len(frames)
            if batch:
                ep.deliver(self, batch)
        except ProtocolError as exc:
            self.refuse(exc.reason, str(exc))

    def _handle_control(self, kind: int, payload: memoryview) -> None:
        if kind == FrameKind.KEEPALIVE:
            return
        if kind == FrameKind.SNAPSHOT_CHUNK:
            self._on_chunk(payload)
        elif kind == FrameKind.SNAPSHOT_CREDIT:
            stream_id, credits = decode_stream_credit(payload)
            out = self.out_streams.get(stream_id)
            if out is not None:
                out.credits += credits
                now = self.ep.loop.time()
                for _ in range(min(credits, len(out.pacer.sent))):
                    out.pacer.credited(now)
                out.wake.set()
        elif kind == FrameKind.REQUEST:
            self._on_request(payload)
        elif kind == FrameKind.RESPONSE:
            self._on_response(payload)
        elif kind == FrameKind.SNAPSHOT_BEGIN:
            self._on_snapshot_begin(payload)
        elif kind == FrameKind.SNAPSHOT_END:
            stream_id, chunks, total = decode_snapshot_end(payload)
            inbound = self.in_streams.get(stream_id)
            if inbound is not None:
                if chunks != inbound.received or total != inbound.total:
                    inbound.queue.put_nowait(
                        f"stream ended after {chunks} chunks / {total} bytes, "
                        f"received {inbound.received} / {inbound.total}"
                    )
                else:
                    inbound.queue.put_nowait(_END)
        elif kind == FrameKind.SNAPSHOT_RESULT:
            stream_id, ok, message = decode_snapshot_result(payload)
            out = self.out_streams.get(stream_id)
            if out is not None:
                out.finish(ok, message)
        elif kind == FrameKind.SNAPSHOT_ABORT:
            stream_id, reason = decode_stream_reason(payload)
            inbound = self.in_streams.get(stream_id)
            if inbound is not None:
                inbound.queue.put_nowait(f"sender aborted: {reason}")
        elif kind == FrameKind.GOAWAY:
            raw = unpack(payload)
            reason = raw[1] if type(raw) is list and len(raw) == 2 and type(raw[1]) is str else ""
            logger.debug("node %d closes the connection: %s", self.peer_id, reason[:200])
            self.closing_locally = True
            if self.transport is not None:
                self.transport.close()

    def _on_chunk(self, payload: memoryview) -> None:
        if len(payload) < STREAM_ID.size:
            raise ProtocolError("bad_snapshot", "chunk shorter than its stream id")
        (stream_id,) = STREAM_ID.unpack_from(payload)
        inbound = self.in_streams.get(stream_id)
        if inbound is None:
            return  # a stream we already failed; chunks in flight are discarded
        inbound.received += 1
        if inbound.received > inbound.granted + self.ep.config.snapshot_window_chunks:
            raise ProtocolError("credit_exceeded", "snapshot chunk beyond the granted credits")
        data = bytes(payload[STREAM_ID.size :])
        inbound.total += len(data)
        inbound.queue.put_nowait(data)

    def _on_snapshot_begin(self, payload: memoryview) -> None:
        ep = self.ep
        stream_id, (group, message) = decode_snapshot_begin(payload)
        if message.sender != self.peer_id:
            raise ProtocolError("bad_snapshot", "snapshot sender is not the connected node")
        handler = ep.snapshot_handler
        if stream_id in self.in_streams:
            raise ProtocolError("bad_snapshot", "snapshot stream id reused")
        if handler is None or ep.inbound_snapshots >= ep.config.max_inbound_snapshots:
            why = "no snapshot handler" if handler is None else "too many snapshots in flight"
            self.write_frame(
                FrameKind.SNAPSHOT_RESULT, encode_snapshot_result(stream_id, False, why)
            )
            return
        inbound = _InStream(self, stream_id)
        self.in_streams[stream_id] = inbound
        ep.inbound_snapshots += 1
        window = ep.config.snapshot_window_chunks
        self.write_frame(FrameKind.SNAPSHOT_CREDIT, encode_pair(stream_id, window))
        task = ep.loop.create_task(self._install(handler, inbound, group, message))
        task._copycat_snapshot = True  # type: ignore[attr-defined]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _install(
        self, handler: SnapshotHandler, inbound: _InStream, group: int, message: InstallSnapshot
    ) -> None:
        ep = self.ep
        ok, why = False, ""
        chunks = inbound.chunks()
        try:
            await handler(self.peer_id, group, message, chunks)
        except asyncio.CancelledError:
            why = "receiver shut down"
            raise
        except Exception as exc:  # the host's handler refused or failed: tell the sender
            why = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "snapshot of %s from node %d failed: %s", group_name(group), self.peer_id, why
            )
        else:
            ok = inbound.complete
            why = "" if ok else "the handler returned before the end of the stream"
            if ok:
                ep.counters.snapshots_received += 1
        finally:
            await chunks.aclose()
            ep.inbound_snapshots -= 1
            self.in_streams.pop(inbound.stream_id, None)
            self.write_frame(
                FrameKind.SNAPSHOT_RESULT, encode_snapshot_result(inbound.stream_id, ok, why)
            )

    def _on_request(self, payload: memoryview) -> None:
        ep = self.ep
        request_id, method, body = decode_request(payload)
        handler = ep.request_handlers.get(method)
        if handler is None:
            self.write_frame(
                FrameKind.RESPONSE,
                encode_response_error(
                    request_id, "unknown_method", f"no handler for {method!r}", {}
                ),
            )
            return
        if self.inflight_requests >= ep.config.max_inflight_requests:
            self.write_frame(
                FrameKind.RESPONSE,
                encode_response_error(request_id, "overloaded", "too many requests in flight", {}),
            )
            return
        self.inflight_requests += 1
        task = ep.loop.create_task(self._serve(handler, request_id, method, body))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(
        self, handler: RequestHandler, request_id: int, method: str, body: bytes
    ) -> None:
        ep = self.ep
        try:
            result = await handler(self.peer_id, body)
            if not isinstance(result, bytes):
                raise TypeError(
                    f"request handler for {method!r} returned {type(result).__name__}, not bytes"
                )
        except asyncio.CancelledError:
            raise
        except CopyCatError as exc:
            reply = encode_response_error(
                request_id, type(exc).__name__, str(exc), _scalar_fields(exc)
            )
        except Exception as exc:  # a bug in the host's handler: log it, answer the caller
            logger.exception("request handler for %r failed", method)
            reply = encode_response_error(request_id, type(exc).__name__, str(exc), {})
        else:
            reply = encode_response_ok(request_id, result)
            ep.counters.requests_served += 1
        finally:
            self.inflight_requests -= 1
        if len(reply) > self.send_max_frame:
            reply = encode_response_error(
                request_id, "MessageTooLargeError", f"response of {len(reply)} bytes", {}
            )
        self.write_frame(FrameKind.RESPONSE, reply)

    def _on_response(self, payload: memoryview) -> None:
        request_id, result = decode_response(payload)
        entry = self.requests.pop(request_id, None)
        if entry is None:
            return  # timed out already
        _method, fut = entry
        if fut.done():
            return
        if isinstance(result, bytes):
            fut.set_result(result)
        else:
            fut.set_exception(_rebuild_error(self.peer_id, *result))


def _scalar_fields(exc: BaseException) -> ErrorFields:
    fields: ErrorFields = {}
    for key, value in vars(exc).items():
        if key.startswith("_") or not (value is None or type(value) in (int, str, bool)):
            continue
        if type(value) is int and not -(1 << 63) <= value < 1 << 64:
            continue
        fields[key] = value
    return fields


def _rebuild_error(peer: int, code: str, message: str, fields: ErrorFields) -> Exception:
    """The remote error as its local CopyCat type when `code` names one; else RemoteError."""
    cls = getattr(errors, code, None) if code in errors.__all__ else None
    if isinstance(cls, type) and issubclass(cls, CopyCatError):
        exc: Exception = cls.__new__(cls)
        Exception.__init__(exc, message)
        for key, value in fields.items():
            with contextlib.suppress(AttributeError, TypeError):
                setattr(exc, key, value)
        return exc
    return RemoteError(peer, code, message)


@final
class Endpoint:
    """One node's transport: listens for peers, dials them, and carries raft messages,
    snapshot streams and requests over one connection per pair of nodes.

    Use as `async with Endpoint(config, on_messages=...) as ep:` or call `start()` and
    `close()`. Handlers may also be set later with the `set_*` methods. See the module
    docstring for the host's contract.
    """

    def __init__(
        self,
        config: TransportConfig,
        *,
        on_messages: MessageHandler | None = None,
        on_unreachable: UnreachableHandler | None = None,
        on_snapshot: SnapshotHandler | None = None,
        faults: FaultHooks | None = None,
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.faults = faults if faults is not None else FaultHooks()
        """Fault hooks consulted by this endpoint (shared if one was passed in)."""
        self.message_handler = on_messages
        self.unreachable_handler = on_unreachable
        self.snapshot_handler = on_snapshot
        self.request_handlers: dict[str, RequestHandler] = {}
        self.counters = Counters()
        self.peers: dict[int, _Peer] = {}
        self.connections: set[_Connection] = set()
        self.codecs = available_codecs(config.compression)
        if config.compression and not self.codecs:
            raise ConfigError(
                "compression",
                f"asks for {', '.join(config.compression)} but none is installed (zstd comes "
                "with copycat-replication, lz4 with copycat-replication[compression]): "
                "install one or ask for none",
            )
        if len(self.codecs) != len(config.compression):
            missing = set(config.compression) - set(self.codecs)
            logger.warning("compression codecs %s are not installed; not offered", sorted(missing))
        self.hostile_log = _HostileLog(config.hostile_log_interval_s)
        self.pending_handshakes = 0
        self.inbound_snapshots = 0
        self.server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self._server: asyncio.AbstractServer | None = None
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._accepting: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._pack = new_packer()
        self._max_msg_bytes = config.max_frame_bytes - _MSG_FRAME_OVERHEAD
        self._request_ids = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self._unreachable: dict[int, set[int] | None] = {}
        self._unreachable_scheduled = False
        self._random = random.Random()
        self._started = False
        self.closed = False
        self._address: tuple[str, int] | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the endpoint is not started")
        return self._loop

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the endpoint listens on; the real port when config.port was 0."""
        if self._address is None:
            raise RuntimeError("the endpoint is not started")
        return self._address

    async def start(self) -> None:
        """Build the TLS contexts, listen, and start dialing known peers."""
        if self.closed:
            raise ClosedError("the endpoint is closed")
        if self._started:
            raise RuntimeError("the endpoint is already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.tls is not None:
            self.server_ssl, self._client_ssl = _ssl_contexts(cfg)
        elif not is_loopback(cfg.host):
            logger.warning(
                "node %d listens on %s without TLS: peers are not authenticated and traffic "
                "is readable on the network; set TransportConfig.tls outside development",
                self.node_id,
                cfg.host,
            )
        try:
            if self.server_ssl is None:
                self._server = await self._loop.create_server(
                    lambda: _Connection(self, outbound=False), cfg.host, cfg.port, backlog=256
                )
                sockname = self._server.sockets[0].getsockname()
            else:
                # With TLS we accept ourselves, so that a failed TLS handshake surfaces here
                # with the peer's address (create_server(ssl=...) only logs it at debug).
                family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
                listener = socket.create_server((cfg.host, cfg.port), family=family, backlog=256)
                listener.setblocking(False)
                self._listener = listener
                sockname = listener.getsockname()
                self._accept_task = self._loop.create_task(
                    self._accept_loop(listener, self.server_ssl)
                )
        except OSError as exc:
            where = f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUseError("transport", where, "TCP port") from exc
            raise OSError(
                exc.errno, f"the transport cannot listen on {where}: {exc.strerror}"
            ) from exc
        self._address = (str(sockname[0]), int(sockname[1]))
        self._housekeeping = self._loop.create_task(self._housekeep())
        for peer in self.peers.values():
            self._start_dialer(peer)
        logger.debug("node %d listening on %s:%d", self.node_id, *self._address)

    async def close(self) -> None:
        """Stop listening, close every connection (queued frames are flushed first),
        fail pending requests and snapshot streams. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task[Any]] = []
        for task in (self._housekeeping, self._accept_task, *self._accepting):
            if task is not None:
                task.cancel()
                tasks.append(task)
        if self._listener is not None:
            self._listener.close()
        for peer in self.peers.values():
            peer.removed = True
            if peer.dial_task is not None:
                peer.dial_task.cancel()
                tasks.append(peer.dial_task)
            self._flush(peer)
        for conn in list(self.connections):
            for task in conn.tasks:
                task.cancel()
                tasks.append(task)
            conn.close("node shutting down")
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
        # Let transports run their close callbacks.
        for _ in range(3):
            await asyncio.sleep(0)
        for conn in list(self.connections):
            conn.abort()

    async def __aenter__(self) -> Endpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ configuration

    def set_message_handler(self, handler: MessageHandler | None) -> None:
        self.message_handler = handler

    def set_unreachable_handler(self, handler: UnreachableHandler | None) -> None:
        self.unreachable_handler = handler

    def set_snapshot_handler(self, handler: SnapshotHandler | None) -> None:
        self.snapshot_handler = handler

    def register_request_handler(self, method: str, handler: RequestHandler) -> None:
        """Serve requests named `method` (1 to 128 characters) with `handler`."""
        if not 0 < len(method) <= 128:
            raise ValueError("method names have 1 to 128 characters")
        self.request_handlers[method] = handler

    def add_peer(self, node_id: int, host: str, port: int) -> None:
        """Tell the endpoint where node `node_id` listens (again to change it). The node
        with the lower id keeps the connection up; the other dials when it has
        something to send and no connection."""
        if node_id == self.node_id or not 0 < node_id < 1 << 64:
            raise ValueError(f"invalid peer id {node_id}")
        if self.closed:
            raise ClosedError("the endpoint is closed")
        peer = self.peers.get(node_id)
        if peer is None:
            peer = _Peer(node_id, (host, port), eager=self.node_id < node_id)
            self.peers[node_id] = peer
        else:
            peer.address = (host, port)
            peer.eager = self.node_id < node_id
        if self._started:
            self._start_dialer(peer)
            if peer.eager:
                peer.wanted.set()

    def remove_peer(self, node_id: int) -> None:
        """Forget node `node_id` (it left the cluster): stop dialing it, close its
        connection gracefully (its pending requests and snapshot streams fail with
        `PeerUnreachableError`) and drop what is queued for it, counted in
        `messages_dropped_unreachable`. Sends to it are then dropped as to any unknown
        node. A later `add_peer(node_id, ...)` starts afresh; if the node dials first,
        it is answered as a peer whose address is not known yet."""
        peer = self.peers.pop(node_id, None)
        if peer is None:
            return
        peer.removed = True
        if peer.dial_task is not None:
            peer.dial_task.cancel()
        conn, peer.conn = peer.conn, None  # late writes (delayed by a fault) find no link
        if conn is not None:
            conn.close("peer removed")
        self.counters.messages_dropped_unreachable += len(peer.parts) - 1
        peer.parts = [b""]
        peer.queued_bytes = 0
        peer.groups = set()

    def stats(self) -> TransportStats:
        """A snapshot of the counters."""
        return self.counters.snapshot()

    def peer_status(self, node_id: int) -> PeerStatus | None:
        peer = self.peers.get(node_id)
        if peer is None:
            return None
        conn = peer.conn
        return PeerStatus(
            node_id=node_id,
            address=peer.address,
            connected=conn is not None,
            queued_msgs=len(peer.parts) - 1,
            queued_bytes=peer.queued_bytes,
            write_paused=conn is not None and conn.paused,
        )

    # ------------------------------------------------------------ sending raft messages

    def send(self, group: int, message: Message) -> None:
        """Queue `message` (of raft group `group`) for node `message.to`.

        Never blocks; everything queued in one event-loop turn leaves in one write.
        Raises only for local misuse: `TypeError` (not a raft message), `ValueError`
        (InstallSnapshot: use `send_snapshot`; a group id out of range),
        `MessageTooLargeError`, `ClosedError`. Network trouble drops the message and
        reports the peer through `on_unreachable` (module docstring, contract 2)."""
        to = message.to
        peer = self.peers.get(to)
        if peer is None or self.closed:
            if self.closed:
                raise ClosedError("the endpoint is closed")
            if type(message) is InstallSnapshot:
                raise ValueError("InstallSnapshot carries data: stream it with send_snapshot()")
            self.counters.messages_dropped_unreachable += 1
            self._report_unreachable(to, group)
            return
        faults = self.faults
        if faults.active:
            if faults.should_drop(self.node_id, to):
                self.counters.messages_dropped_fault += 1
                return
            delay = faults.delay_s(self.node_id, to)
            if delay > 0.0:
                data = self._encode(group, message)
                self.loop.call_later(delay, self._enqueue, peer, group, data)
                return
        self._enqueue(peer, group, self._encode(group, message))

    def _encode(self, group: int, message: Message) -> bytes:
        if type(message) is InstallSnapshot:
            raise ValueError("InstallSnapshot carries data: stream it with send_snapshot()")
        data = encode_message(group, message, self._pack)
        if len(data) > self._max_msg_bytes:
            raise MessageTooLargeError(len(data), self._max_msg_bytes)
        return data

    def _enqueue(self, peer: _Peer, group: int, data: bytes) -> None:
        if peer.conn is None:
            if peer.removed or self.closed:
                return
            if peer.backoff_until and self.loop.time() < peer.backoff_until:
                self.counters.messages_dropped_unreachable += 1
                self._report_unreachable(peer.node_id, group)
                return
            peer.wanted.set()
        cfg = self.config
        parts = peer.parts
        if (
            len(parts) > cfg.send_queue_max_msgs
            or peer.queued_bytes + len(data) > cfg.send_queue_max_bytes
        ):
            self.counters.messages_dropped_overflow += 1
            self._report_unreachable(peer.node_id, group)
            return
        parts.append(data)
        peer.queued_bytes += len(data)
        peer.groups.add(group)
        if not peer.flush_scheduled:
            peer.flush_scheduled = True
            self.loop.call_soon(self._flush, peer)

    def flush(self) -> None:
        """Write what is queued for every peer now instead of at the end of this
        event-loop turn (for a caller about to block the loop, e.g. on an fsync)."""
        for peer in self.peers.values():
            if peer.flush_scheduled:
                self._flush(peer)

    def schedule_flush(self, peer: _Peer) -> None:
        if not peer.flush_scheduled and len(peer.parts) > 1:
            peer.flush_scheduled = True
            self.loop.call_soon(self._flush, peer)

    def _flush(self, peer: _Peer) -> None:
        peer.flush_scheduled = False
        conn = peer.conn
        parts = peer.parts
        if conn is None or conn.paused or len(parts) == 1:
            return
        size = peer.queued_bytes
        peer.parts = [b""]
        peer.queued_bytes = 0
        peer.groups = set()
        conn.write_messages(parts, len(parts) - 1, size)

    def _drop_queue(self, peer: _Peer) -> None:
        if len(peer.parts) > 1:
            self.counters.messages_dropped_unreachable += len(peer.parts) - 1
            groups = peer.groups
            peer.parts = [b""]
            peer.queued_bytes = 0
            peer.groups = set()
            for group in groups:
                self._report_unreachable(peer.node_id, group)

    def _report_unreachable(self, node_id: int, group: int | None) -> None:
        if self.unreachable_handler is None:
            return
        pending = self._unreachable
        if group is None:
            pending[node_id] = None
        elif node_id not in pending:
            pending[node_id] = {group}
        else:
            groups = pending[node_id]
            if groups is not None:
                groups.add(group)
        if not self._unreachable_scheduled:
            self._unreachable_scheduled = True
            self.loop.call_soon(self._fire_unreachable)

    def _fire_unreachable(self) -> None:
        self._unreachable_scheduled = False
        pending, self._unreachable = self._unreachable, {}
        handler = self.unreachable_handler
        if handler is None:
            return
        for node_id, groups in pending.items():
            try:
                handler(node_id, None if groups is None else frozenset(groups))
            except Exception:  # a bug in the host's callback must not stop the transport
                logger.exception("unreachable handler failed for node %d", node_id)

    async def drain(self, node_id: int) -> None:
        """Write what is queued for `node_id` now and wait until the socket's buffer is
        below its low-water mark (for senders that want backpressure, not drops)."""
        peer = self.peers.get(node_id)
        if peer is None:
            return
        self._flush(peer)
        conn = peer.conn
        while conn is not None and conn.paused and conn.state == _OPEN:
            await conn.writable.wait()
            self._flush(peer)
            conn = peer.conn

    # ------------------------------------------------------------ receiving

    def deliver(self, conn: _Connection, batch: list[Envelope]) -> None:
        peer_id = conn.peer_id
        faults = self.faults
        if faults.active and faults.is_cut(peer_id, self.node_id):
            self.counters.messages_dropped_fault += len(batch)
            return
        me = self.node_id
        for _group, message in batch:
            if message.sender != peer_id or message.to != me:
                raise ProtocolError(
                    "bad_message",
                    f"message from {message.sender} to {message.to} on the link "
                    f"from node {peer_id} to node {me}",
                )
            if type(message) is InstallSnapshot:
                raise ProtocolError("bad_message", "InstallSnapshot outside a snapshot stream")
        self.counters.messages_received += len(batch)
        handler = self.message_handler
        if handler is None:
            return
        try:
            handler(peer_id, batch)
        except Exception:  # a bug in the host's handler: loud in the log, link survives
            logger.exception("message handler failed on a batch from node %d", peer_id)

    # ------------------------------------------------------------ connections

    def _peer_entry(self, node_id: int) -> _Peer:
        peer = self.peers.get(node_id)
        if peer is None:
            # A node that dialed us before we learned its address: we can answer on
            # its connection but cannot dial it.
            peer = _Peer(node_id, None, eager=False)
            self.peers[node_id] = peer
            self._start_dialer(peer)
        return peer

    def _dialer_of(self, conn: _Connection) -> int:
        return self.node_id if conn.outbound else conn.peer_id

    def _keeps_new(self, new: _Connection, old: _Connection) -> bool:
        """The rule both ends apply when a pair has two connections: keep the one the
        lower node id dialed; between two dialed by the same node, keep the newer."""
        new_dialer, old_dialer = self._dialer_of(new), self._dialer_of(old)
        return new_dialer == old_dialer or new_dialer < old_dialer

    def accepts(self, conn: _Connection) -> bool:
        peer = self.peers.get(conn.peer_id)
        if peer is None or peer.conn is None or peer.conn.state != _OPEN:
            return True
        if self._keeps_new(conn, peer.conn):
            return True
        # Probe the kept connection: if it is dead, the write surfaces it soon.
        peer.conn.write_frame(FrameKind.KEEPALIVE, b"")
        return False

    def attach(self, conn: _Connection) -> None:
        peer = self._peer_entry(conn.peer_id)
        old = peer.conn
        if old is not None and old is not conn and old.state == _OPEN:
            if not self._keeps_new(conn, old):
                conn.close(_GOAWAY_DUPLICATE)
                return
            old.close(_GOAWAY_DUPLICATE)
        if conn.outbound and peer.ever_connected:
            self.counters.reconnects += 1
        peer.ever_connected = True
        peer.conn = conn
        peer.backoff_until = 0.0
        peer.down.clear()
        peer.up.set()
        logger.debug("node %d connected to node %d (%s)", self.node_id, peer.node_id, conn.remote)
        self.schedule_flush(peer)

    def detach(self, conn: _Connection) -> None:
        peer = self.peers.get(conn.peer_id)
        if peer is None or peer.conn is not conn:
            return
        peer.conn = None
        peer.up.clear()
        peer.down.set()
        if self.closed or peer.removed:
            return
        self._report_unreachable(peer.node_id, None)
        if len(peer.parts) > 1:
            peer.wanted.set()

    def _start_dialer(self, peer: _Peer) -> None:
        if self._loop is None or peer.dial_task is not None or self.closed:
            return
        peer.dial_task = self._loop.create_task(self._dial_loop(peer))
        if peer.eager:
            peer.wanted.set()

    async def _dial_loop(self, peer: _Peer) -> None:
        cfg = self.config
        delay = cfg.reconnect_initial_s
        while not self.closed and not peer.removed:
            if peer.conn is not None:
                await peer.down.wait()
                continue
            if not peer.eager:
                await peer.wanted.wait()
                if peer.conn is not None:
                    continue
            if peer.address is None:
                # Inbound-only peer: nothing to dial; what waits for it cannot leave.
                self._drop_queue(peer)
                peer.wanted.clear()
                continue
            try:
                await self._dial(peer, self.faults.dial_address(peer.node_id, peer.address))
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, TransportError) as exc:
                if peer.conn is not None:
                    continue  # lost a simultaneous-dial race to a connection that works
                self.counters.dial_failures += 1
                host, port = peer.address
                self.hostile_log.log(
                    self.loop.time(),
                    f"node {peer.node_id} ({host}:{port})",
                    "dial",
                    f"cannot connect: {type(exc).__name__}: {exc}",
                )
                wait = delay * (1.0 - cfg.reconnect_jitter * self._random.random())
                peer.backoff_until = self.loop.time() + wait
                self._drop_queue(peer)
                peer.wanted.clear()
                await asyncio.sleep(wait)
                delay = min(delay * 2.0, cfg.reconnect_max_s)
                continue
            delay = cfg.reconnect_initial_s
            peer.wanted.clear()

    async def _dial(self, peer: _Peer, address: tuple[str, int]) -> None:
        cfg = self.config
        host, port = address
        conn = _Connection(self, outbound=True, expected_peer=peer.node_id)
        ctx = self._client_ssl
        try:
            async with asyncio.timeout(cfg.connect_timeout_s + cfg.handshake_timeout_s):
                await self.loop.create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=ctx,
                    server_hostname=(host if ctx is not None else None),
                    ssl_handshake_timeout=(cfg.handshake_timeout_s if ctx is not None else None),
                )
                await conn.handshake_done
        except ssl.SSLError as exc:
            self.counters.refuse("tls")
            conn.abort()
            raise HandshakeError(
                peer.node_id, f"TLS handshake with {host}:{port} failed: {exc}"
            ) from exc
        except BaseException:
            conn.abort()
            raise

    async def _accept_loop(self, listener: socket.socket, ctx: ssl.SSLContext) -> None:
        loop = self.loop
        while True:
            sock, addr = await loop.sock_accept(listener)
            who = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
            if self.pending_handshakes >= self.config.max_pending_handshakes:
                self.counters.refuse("too_many_handshakes")
                self.hostile_log.log(
                    loop.time(),
                    who,
                    "too_many_handshakes",
                    "too many connections in their handshake",
                )
                sock.close()
                continue
            task = loop.create_task(self._accept_tls(sock, who, ctx))
            self._accepting.add(task)
            task.add_done_callback(self._accepting.discard)

    async def _accept_tls(self, sock: socket.socket, who: str, ctx: ssl.SSLContext) -> None:
        self.pending_handshakes += 1
        conn = _Connection(self, outbound=False, tls_accepted=True)
        try:
            await self.loop.connect_accepted_socket(
                lambda: conn, sock, ssl=ctx, ssl_handshake_timeout=self.config.handshake_timeout_s
            )
        except asyncio.CancelledError:
            sock.close()
            raise
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.counters.refuse("tls")
            self.hostile_log.log(self.loop.time(), who, "tls", f"TLS handshake failed: {exc}")
            sock.close()
        finally:
            if not conn.counted_pending and conn.state == _HANDSHAKE and conn.transport is None:
                self.pending_handshakes -= 1

    async def _housekeep(self) -> None:
        cfg = self.config
        interval = min(
            1.0, cfg.handshake_timeout_s / 4, cfg.keepalive_interval_s / 2, cfg.frame_timeout_s / 4
        )
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for conn in list(self.connections):
                if conn.state == _HANDSHAKE:
                    if now - conn.created > cfg.handshake_timeout_s:
                        conn.refuse(
                            "handshake_timeout",
                            f"no complete handshake within {cfg.handshake_timeout_s} s",
                        )
                elif conn.state == _OPEN:
                    if (
                        conn.frame_started is not None
                        and now - conn.frame_started > cfg.frame_timeout_s
                    ):
                        conn.refuse(
                            "frame_timeout", f"a frame took over {cfg.frame_timeout_s} s to arrive"
                        )
                    elif now - conn.last_recv > cfg.idle_timeout_s:
                        conn.refuse("idle_timeout", f"nothing received for {cfg.idle_timeout_s} s")
                    elif now - conn.last_send >= cfg.keepalive_interval_s:
                        conn.write_frame(FrameKind.KEEPALIVE, b"")

    async def _connection_to(self, node_id: int, timeout_s: float) -> _Connection:
        if self.closed:
            raise ClosedError("the endpoint is closed")
        if self.faults.active and self.faults.is_cut(self.node_id, node_id):
            raise PeerUnreachableError(node_id, f"the link to node {node_id} is cut (fault hook)")
        peer = self.peers.get(node_id)
        if peer is None:
            raise PeerUnreachableError(node_id, f"node {node_id} is not a known peer")
        conn = peer.conn
        if conn is not None:
            return conn
        peer.wanted.set()
        try:
            async with asyncio.timeout(timeout_s):
                while peer.conn is None:
                    await peer.up.wait()
        except TimeoutError:
            raise PeerUnreachableError(
                node_id, f"no connection to node {node_id} within {timeout_s} s"
            ) from None
        assert peer.conn is not None
        return peer.conn

    # ------------------------------------------------------------ requests

    async def request(
        self, node_id: int, method: str, body: bytes = b"", *, timeout_s: float | None = None
    ) -> bytes:
        """Call `method` on node `node_id` and return its response body.

        Raises `RequestTimeoutError` when no response came within `timeout_s` (default
        `config.request_timeout_s`, connecting included), `PeerUnreachableError` when
        the peer cannot be reached or the connection drops, the peer handler's own
        `CopyCatError` type when it raised one, and `RemoteError` otherwise."""
        timeout = self.config.request_timeout_s if timeout_s is None else timeout_s
        deadline = self.loop.time() + timeout
        conn = await self._connection_to(node_id, timeout)
        peer = self.peers.get(node_id)
        if peer is not None:
            self._flush(peer)  # keep the order of what was sent before
        request_id = next(self._request_ids)
        payload = encode_request(request_id, method, body)
        if len(payload) > conn.send_max_frame:
            raise MessageTooLargeError(len(payload), conn.send_max_frame)
        fut: asyncio.Future[bytes] = self.loop.create_future()
        conn.requests[request_id] = (method, fut)
        conn.write_frame(FrameKind.REQUEST, payload)
        self.counters.requests_sent += 1
        try:
            async with asyncio.timeout_at(deadline):
                return await fut
        except TimeoutError:
            raise RequestTimeoutError(node_id, method, timeout) from None
        finally:
            conn.requests.pop(request_id, None)

    # ------------------------------------------------------------ snapshots

    async def send_snapshot(
        self,
        group: int,
        message: InstallSnapshot,
        chunks: AsyncIterable[bytes | bytearray | memoryview] | None = None,
    ) -> None:
        """Stream a snapshot to node `message.to` and wait until its handler installed it.

        The data comes from `chunks` (for instance `read_file_chunks(path)`) or, when
        None, from `message.snapshot.data`. At most `snapshot_window_chunks` chunks are
        read ahead of the receiver's acknowledgements, so memory stays bounded whatever
        the snapshot's size; other groups' messages interleave with the chunks.
        Returns on success. Raises `PeerUnreachableError` when no connection could be
        had, `SnapshotStreamError` when the stream or the install failed; report
        either to raft (contract 3 in the module docstring)."""
        if type(message) is not InstallSnapshot:
            raise TypeError("send_snapshot takes an InstallSnapshot message")
        cfg = self.config
        node_id = message.to
        try:
            conn = await self._connection_to(
                node_id, cfg.connect_timeout_s + cfg.handshake_timeout_s
            )
            await self._stream_snapshot(conn, group, message, chunks)
        except (SnapshotStreamError, PeerUnreachableError):
            self.counters.snapshots_failed += 1
            raise
        self.counters.snapshots_sent += 1

    async def _stream_snapshot(
        self,
        conn: _Connection,
        group: int,
        message: InstallSnapshot,
        chunks: AsyncIterable[bytes | bytearray | memoryview] | None,
    ) -> None:
        cfg = self.config
        node_id = message.to
        stream_id = next(self._stream_ids)
        out = _OutStream(self.loop, cfg.snapshot_queue_target_s)
        conn.out_streams[stream_id] = out
        peer = self.peers.get(node_id)
        if peer is not None:
            self._flush(peer)
        bare = InstallSnapshot(
            term=message.term,
            sender=message.sender,
            to=message.to,
            snapshot=Snapshot(metadata=message.snapshot.metadata),
        )
        source: AsyncIterable[bytes | bytearray | memoryview] = (
            chunks
            if chunks is not None
            else _split_bytes(message.snapshot.data, cfg.snapshot_chunk_bytes)
        )
        size = cfg.snapshot_chunk_bytes
        count = 0
        total = 0
        try:
            conn.write_frame(
                FrameKind.SNAPSHOT_BEGIN, encode_snapshot_begin(stream_id, group, bare)
            )
            async for chunk in source:
                view = memoryview(chunk)
                for start in range(0, len(view), size):
                    piece = view[start : start + size]
                    while (out.credits <= 0 or not out.pacer.open()) and not out.result.done():
                        out.wake.clear()
                        async with asyncio.timeout(cfg.snapshot_timeout_s):
                            await out.wake.wait()
                    if out.result.done():
                        break
                    await conn.wait_writable()
                    if self.faults.active and self.faults.is_cut(self.node_id, node_id):
                        raise SnapshotStreamError(node_id, "the link is cut (fault hook)")
                    out.credits -= 1
                    out.pacer.sent.append(self.loop.time())
                    counters = self.counters
                    if len(out.pacer.sent) > counters.snapshot_chunks_in_flight_max:
                        counters.snapshot_chunks_in_flight_max = len(out.pacer.sent)
                    conn.write_chunk(stream_id, piece)
                    count += 1
                    total += len(piece)
                if out.result.done():
                    break
            if not out.result.done():
                conn.write_frame(
                    FrameKind.SNAPSHOT_END, encode_snapshot_end(stream_id, count, total)
                )
            async with asyncio.timeout(cfg.snapshot_timeout_s):
                ok, why = await out.result
        except PeerUnreachableError as exc:
            raise SnapshotStreamError(node_id, str(exc)) from exc
        except TimeoutError:
            conn.write_frame(FrameKind.SNAPSHOT_ABORT, encode_pair(stream_id, "sender timed out"))
            raise SnapshotStreamError(
                node_id, f"no progress for {cfg.snapshot_timeout_s} s"
            ) from None
        except BaseException as exc:
            reason = "sender cancelled" if isinstance(exc, asyncio.CancelledError) else str(exc)
            conn.write_frame(FrameKind.SNAPSHOT_ABORT, encode_pair(stream_id, reason[:200]))
            raise
        finally:
            conn.out_streams.pop(stream_id, None)
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        if not ok:
            raise SnapshotStreamError(node_id, why)


async def _split_bytes(data: bytes, size: int) -> AsyncIterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield view[start : start + size]


def _ssl_contexts(cfg: TransportConfig) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts for mutual TLS (TLS 1.2+, CA-verified both ways).
    A TLS file that cannot be read or parsed is a `ConfigError` naming the `Config`
    field and the path."""
    tls = cfg.tls
    assert tls is not None
    for field, path in (
        ("tls_ca_file", tls.ca_file),
        ("tls_cert_file", tls.cert_file),
        ("tls_key_file", tls.key_file),
    ):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(field, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca_file)
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            "tls_ca_file", f"{tls.ca_file} holds no PEM certificate the CA can be read from: {exc}"
        ) from None
    try:
        server.load_cert_chain(tls.cert_file, tls.key_file)
        client.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            "tls_cert_file",
            f"{tls.cert_file} and {tls.key_file} are not a PEM certificate and its "
            f"unencrypted private key: {exc}",
        ) from None
    server.verify_mode = ssl.CERT_REQUIRED
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    client.check_hostname = tls.check_hostname
    client.verify_mode = ssl.CERT_REQUIRED
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    return server, client
