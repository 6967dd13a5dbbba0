# The simulator's network: `SimNetwork` (links between simulated nodes) and `SimTransport`
# (one node's end, behind the `Transport` protocol the host and the node use).
#
# What lives here: links with a latency drawn from the seeded generator, delivery in
# order per direction, one-way cuts (a cut also drops what is in flight on that
# direction, as a reset TCP connection loses its buffers), a bandwidth limit per link,
# requests with their timeouts and typed errors, and snapshots streamed at the link's
# speed. Every raft message goes through the real wire codec both ways, so no object is
# ever shared between two nodes and a codec fault shows here too.
#
# What must not: sockets, threads, the wall clock, the global random. Framing, TLS,
# handshakes and flow control are the TCP endpoint's and are tested against it
# (tests/transport); docs/testing.md lists what the simulation leaves out.
"""The simulated network and each node's transport on it."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import TYPE_CHECKING, Final

from copycat.errors import (
    ClosedError,
    CopyCatError,
    PeerUnreachableError,
    RemoteError,
    RequestTimeoutError,
    SnapshotStreamError,
)
from copycat.raft import InstallSnapshot, Snapshot
from copycat.transport import decode_messages, encode_message
from copycat.transport._endpoint import _rebuild_error, _scalar_fields

if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterable, AsyncIterator, Callable

    from copycat.raft import Message
    from copycat.testing.sim._loop import Process
    from copycat.transport import (
        MessageHandler,
        RequestHandler,
        SnapshotHandler,
        TransportConfig,
        UnreachableHandler,
    )

log = logging.getLogger("copycat.sim")

_ORDER_EPSILON_S: Final = 1e-6
"""Two deliveries on one link are at least this far apart, so timers never tie."""


class _Link:
    """One direction between two nodes."""

    __slots__ = ("bandwidth", "busy_until", "cut", "epoch", "latency_s")

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.cut = False
        self.epoch = 0
        self.busy_until = 0.0
        self.bandwidth: float | None = None
        """Bytes per second, or None: unlimited."""


class SimNetwork:
    """Every link of a simulated cluster. `latency(a, b)` gives the base one-way delay
    between two nodes (by data center, say); each message adds up to `jitter` of it."""

    def __init__(
        self,
        rng: random.Random,
        *,
        latency: Callable[[int, int], float],
        jitter: float = 0.5,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.rng = rng
        self._latency = latency
        self.jitter = jitter
        self._trace = trace
        self._links: dict[tuple[int, int], _Link] = {}
        self.nodes: dict[int, SimTransport] = {}
        """The transport of each node's current run (absent: never started or closed)."""
        self.messages = 0
        self.dropped = 0

    def link(self, a: int, b: int) -> _Link:
        found = self._links.get((a, b))
        if found is None:
            found = self._links[(a, b)] = _Link(self._latency(a, b))
        return found

    # -- faults -----------------------------------------------------------------------------

    def cut(self, a: int, b: int) -> None:
        """Packets from `a` to `b` are lost until `heal(a, b)`, those in flight too."""
        link = self.link(a, b)
        if not link.cut:
            link.cut = True
            link.epoch += 1

    def heal(self, a: int, b: int) -> None:
        self.link(a, b).cut = False

    def heal_all(self) -> None:
        for link in self._links.values():
            link.cut = False

    def set_bandwidth(self, a: int, b: int, bytes_per_s: float | None) -> None:
        self.link(a, b).bandwidth = bytes_per_s

    def up(self, a: int, b: int) -> bool:
        """Whether a packet from `a` reaches `b` now: the link is whole and both runs
        are live and not paused."""
        if self.link(a, b).cut:
            return False
        src, dst = self.nodes.get(a), self.nodes.get(b)
        return src is not None and dst is not None and src.running and dst.running

    def crashed(self, node_id: int, *, keep_sent: bool = False) -> None:
        """`node_id`'s run vanished: what is in flight to it is lost, and what it sent,
        unless `keep_sent` (bytes already in the kernel's buffers still leave after a
        kill -9 or a power cut of the process alone)."""
        transport = self.nodes.pop(node_id, None)
        if transport is not None:
            transport.closed = True
        for (a, b), link in self._links.items():
            if b == node_id or (a == node_id and not keep_sent):
                link.epoch += 1

    # -- delivery ---------------------------------------------------------------------------

    def arrival(self, a: int, b: int, size: int) -> tuple[_Link, float, int]:
        """When `size` bytes sent now from `a` reach `b`, in order after what was sent
        before; and the link's epoch, which a cut or crash moves on."""
        link = self.link(a, b)
        now = asyncio.get_running_loop().time()
        at = now + link.latency_s * (1.0 + self.jitter * self.rng.random())
        if link.bandwidth is not None:
            start = max(now, link.busy_until)
            link.busy_until = start + size / link.bandwidth
            at = max(at, link.busy_until + link.latency_s)
        at = max(at, link.busy_until + _ORDER_EPSILON_S)
        link.busy_until = max(link.busy_until, at - link.latency_s)
        return link, at, link.epoch

    def trace(self, line: str) -> None:
        if self._trace is not None:
            self._trace(line)


class SimTransport:
    """A node's `Transport` on a `SimNetwork`. Built by `SimNetwork`'s owner per run."""

    def __init__(
        self, net: SimNetwork, config: TransportConfig, process: Process, port: int
    ) -> None:
        self.net = net
        self.config = config
        self.node_id = config.node_id
        self.process = process
        self.context = contextvars.copy_context()
        self._port = port
        self.closed = False
        self._started = False
        self._peers: dict[int, tuple[str, int]] = {}
        self._message_handler: MessageHandler | None = None
        self._unreachable_handler: UnreachableHandler | None = None
        self._snapshot_handler: SnapshotHandler | None = None
        self._request_handlers: dict[str, RequestHandler] = {}
        self._outbox: dict[int, list[bytes]] = {}
        self._flush_scheduled = False
        self._unreachable: dict[int, set[int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        return not self.closed and not self.process.paused and not self.process.vanished

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self._port)

    async def start(self) -> None:
        if self.closed:
            raise ClosedError("the transport is closed")
        self.context = contextvars.copy_context()  # this run's: deliveries run in it
        self.net.nodes[self.node_id] = self
        self._started = True

    async def close(self) -> None:
        self.closed = True
        if self.net.nodes.get(self.node_id) is self:
            del self.net.nodes[self.node_id]

    # -- configuration ------------------------------------------------------------------

    def set_message_handler(self, handler: MessageHandler | None) -> None:
        self._message_handler = handler

    def set_unreachable_handler(self, handler: UnreachableHandler | None) -> None:
        self._unreachable_handler = handler

    def set_snapshot_handler(self, handler: SnapshotHandler | None) -> None:
        self._snapshot_handler = handler

    def register_request_handler(self, method: str, handler: RequestHandler) -> None:
        self._request_handlers[method] = handler

    def add_peer(self, node_id: int, host: str, port: int) -> None:
        if node_id == self.node_id:
            raise ValueError(f"invalid peer id {node_id}")
        self._peers[node_id] = (host, port)

    def knows(self, node_id: int) -> bool:
        """Whether this transport has an address for `node_id` (from the node's view)."""
        return node_id in self._peers

    def remove_peer(self, node_id: int) -> None:
        self._peers.pop(node_id, None)
        self._outbox.pop(node_id, None)

    # -- raft messages ------------------------------------------------------------------

    def send(self, group: int, message: Message) -> None:
        if self.closed:
            raise ClosedError("the transport is closed")
        if type(message) is InstallSnapshot:
            raise ValueError("InstallSnapshot carries data: stream it with send_snapshot()")
        to = message.to
        if to not in self._peers:
            self._report(to, group)
            return
        self.net.messages += 1
        self._outbox.setdefault(to, []).append(encode_message(group, message))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, {}
        loop = asyncio.get_running_loop()
        for to, items in outbox.items():
            if not self.net.up(self.node_id, to):
                self.net.dropped += len(items)
                for group, _ in decode_messages(_frame(items)):
                    self._report(to, group)
                continue
            target = self.net.nodes[to]
            size = sum(map(len, items))
            link, at, epoch = self.net.arrival(self.node_id, to, size)
            loop.call_at(
                at, target._deliver, self.node_id, _frame(items), link, epoch,
                context=target.context,
            )  # fmt: skip

    def _deliver(self, sender: int, frame: bytes, link: _Link, epoch: int) -> None:
        if link.epoch != epoch or self.closed:
            self.net.dropped += 1
            return
        handler = self._message_handler
        if handler is not None:
            handler(sender, decode_messages(frame))

    def _report(self, peer: int, group: int) -> None:
        handler = self._unreachable_handler
        if handler is None:
            return
        pending = self._unreachable
        if not pending:
            asyncio.get_running_loop().call_soon(self._fire_unreachable)
        pending.setdefault(peer, set()).add(group)

    def _fire_unreachable(self) -> None:
        pending, self._unreachable = self._unreachable, {}
        handler = self._unreachable_handler
        if handler is None or self.closed:
            return
        for peer, groups in pending.items():
            handler(peer, frozenset(groups))

    # -- requests -----------------------------------------------------------------------

    async def request(
        self, node_id: int, method: str, body: bytes = b"", *, timeout_s: float | None = None
    ) -> bytes:
        if self.closed:
            raise ClosedError("the transport is closed")
        timeout = self.config.request_timeout_s if timeout_s is None else timeout_s
        if node_id not in self._peers:
            raise PeerUnreachableError(node_id, "no address known for it")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes | BaseException] = loop.create_future()
        caller_ctx = contextvars.copy_context()

        def answer(value: bytes | BaseException) -> None:
            if not reply.done():
                reply.set_result(value)

        target = self.net.nodes.get(node_id)
        if target is None:
            # Nothing listens at the address: refused after one round trip.
            await asyncio.sleep(2 * self.net.link(self.node_id, node_id).latency_s)
            raise PeerUnreachableError(node_id, "connection refused")
        if self.net.up(self.node_id, node_id):
            link, at, epoch = self.net.arrival(self.node_id, node_id, len(body) + 32)
            loop.call_at(
                at, target._serve, self.node_id, method, body, link, epoch,
                (caller_ctx, answer), context=target.context,
            )  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                value = await reply
        except TimeoutError:
            raise RequestTimeoutError(node_id, method, timeout) from None
        if isinstance(value, BaseException):
            raise value
        return value

    def _serve(
        self,
        sender: int,
        method: str,
        body: bytes,
        link: _Link,
        epoch: int,
        back: tuple[contextvars.Context, Callable[[bytes | BaseException], None]],
    ) -> None:
        if link.epoch != epoch or self.closed:
            return
        task = asyncio.get_running_loop().create_task(self._run_handler(sender, method, body, back))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handler(
        self,
        sender: int,
        method: str,
        body: bytes,
        back: tuple[contextvars.Context, Callable[[bytes | BaseException], None]],
    ) -> None:
        handler = self._request_handlers.get(method)
        result: bytes | BaseException
        if handler is None:
            result = RemoteError(self.node_id, "unknown_method", f"no handler for {method!r}")
        else:
            try:
                result = bytes(await handler(sender, body))
            except CopyCatError as exc:
                fields = _scalar_fields(exc)
                result = _rebuild_error(self.node_id, type(exc).__name__, str(exc), fields)
            except Exception as exc:  # a bug in a handler reaches the caller, as over TCP
                log.exception("request handler %s failed", method)
                result = RemoteError(self.node_id, type(exc).__name__, str(exc))
        if self.closed or not self.net.up(self.node_id, sender):
            return  # the response is lost: the caller times out
        size = len(result) if isinstance(result, bytes) else 64
        link, at, epoch = self.net.arrival(self.node_id, sender, size + 32)
        caller_ctx, answer = back
        asyncio.get_running_loop().call_at(
            at, _answer_if_current, link, epoch, answer, result, context=caller_ctx
        )

    # -- snapshots ----------------------------------------------------------------------

    async def send_snapshot(
        self,
        group: int,
        message: InstallSnapshot,
        chunks: AsyncIterable[bytes | bytearray | memoryview] | None = None,
    ) -> None:
        if type(message) is not InstallSnapshot:
            raise TypeError("send_snapshot takes an InstallSnapshot message")
        to = message.to
        if to not in self._peers:
            raise PeerUnreachableError(to, "no address known for it")
        if not self.net.up(self.node_id, to):
            raise PeerUnreachableError(to, "the link is down")
        if chunks is None:
            data = bytes(message.snapshot.data)
        else:
            data = b"".join([bytes(c) async for c in chunks])
        target = self.net.nodes[to]
        link, at, epoch = self.net.arrival(self.node_id, to, len(data) + 64)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        caller_ctx = contextvars.copy_context()
        bare = InstallSnapshot(
            term=message.term,
            sender=message.sender,
            to=message.to,
            snapshot=Snapshot(metadata=message.snapshot.metadata),
        )

        def finish(why: str) -> None:
            if not done.done():
                done.set_result(why)

        loop.call_at(
            at, target._install, self.node_id, group, bare, data, link, epoch,
            (caller_ctx, finish), context=target.context,
        )  # fmt: skip
        try:
            async with asyncio.timeout(self.config.snapshot_timeout_s):
                why = await done
        except TimeoutError:
            raise SnapshotStreamError(to, "no answer to the snapshot") from None
        if why:
            raise SnapshotStreamError(to, why)

    def _install(
        self,
        sender: int,
        group: int,
        bare: InstallSnapshot,
        data: bytes,
        link: _Link,
        epoch: int,
        back: tuple[contextvars.Context, Callable[[str], None]],
    ) -> None:
        if link.epoch != epoch or self.closed:
            return
        task = asyncio.get_running_loop().create_task(
            self._run_install(sender, group, bare, data, back)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_install(
        self,
        sender: int,
        group: int,
        bare: InstallSnapshot,
        data: bytes,
        back: tuple[contextvars.Context, Callable[[str], None]],
    ) -> None:
        why = ""
        handler = self._snapshot_handler
        if handler is None:
            why = "no snapshot handler"
        else:
            try:
                await handler(sender, group, bare, _one_chunk(data))
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"[:200]
        if self.closed or not self.net.up(self.node_id, sender):
            return
        link, at, epoch = self.net.arrival(self.node_id, sender, 64)
        caller_ctx, finish = back
        asyncio.get_running_loop().call_at(
            at, _answer_if_current, link, epoch, finish, why, context=caller_ctx
        )


def _answer_if_current(link: _Link, epoch: int, answer: Callable[..., None], *args: object) -> None:
    if link.epoch == epoch:
        answer(*args)


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _frame(items: list[bytes]) -> bytes:
    """The MESSAGES frame payload for `items`: a msgpack array header, then each item."""
    n = len(items)
    if n < 16:
        header = bytes([0x90 | n])
    elif n < 1 << 16:
        header = b"\xdc" + n.to_bytes(2, "big")
    else:
        header = b"\xdd" + n.to_bytes(4, "big")
    return header + b"".join(items)
