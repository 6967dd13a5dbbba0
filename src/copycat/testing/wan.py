"""WAN emulation for process tests and benchmarks: long, slow or cut links between real
node processes on one machine.

What lives here: `WanEmulator`, a user-space TCP relay with one listener per directed link
(node a dialing node b), which holds each direction's bytes back by that direction's
one-way delay (plus jitter, order kept), paces them to a bandwidth cap, and stalls them
while the link is cut; `Link`, one direction's settings; and the glue a node process
needs to dial its peers through the relay (`redirect_world`, `parse_routes`,
`format_routes`). Every setting can change while traffic flows.

What must not: anything a node runs in production. The relay carries the CopyCat
transport (raft messages, requests, snapshots), not gossip, whose UDP packets go
straight between nodes: gossip only decides membership, and its own timing presets
already assume slow links. We wrote our own relay (a page of asyncio) because the
usual tools (tc netem, toxiproxy) need root or a Go binary, and neither sets a
different delay per ordered pair of nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, TypeVar, final

from copycat._world import World
from copycat.transport import Endpoint, FaultHooks

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable, Mapping
    from typing import Any

    from copycat.transport import Transport, TransportConfig

__all__: Final = [
    "Link",
    "WanEmulator",
    "format_routes",
    "parse_routes",
    "redirect_world",
    "routes_for",
]

READ_BYTES: Final = 64 << 10
"""Bytes read from a socket at a time: one chunk of a direction's queue."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """One direction of a link between two nodes."""

    delay_s: float = 0.0
    """One-way delay in seconds (half the round trip of a symmetric link)."""

    jitter_s: float = 0.0
    """Each chunk's delay is drawn uniformly from `delay_s` +/- `jitter_s` (never below
    0), and never overtakes an earlier chunk: TCP delivers in order."""

    bandwidth_bytes_per_s: float | None = None
    """Pacing of the bytes put on the link; None: no cap."""

    cut: bool = False
    """Whether nothing flows (a partition): bytes wait, unsent and unread, until healed,
    as TCP would keep retransmitting them."""

    def __post_init__(self) -> None:
        if not self.delay_s >= 0 or not self.jitter_s >= 0:
            raise ValueError("delay_s and jitter_s must not be negative")
        if self.bandwidth_bytes_per_s is not None and not self.bandwidth_bytes_per_s > 0:
            raise ValueError("bandwidth_bytes_per_s must be positive or None")


_OPEN: Final = Link()


@final
class WanEmulator:
    """Relays every transport connection between nodes through per-link listeners.

    Use: `link(a, b, target)` for each ordered pair, before the nodes start, gives the
    address node `a` must dial node `b` at (pass the routes to node `a`, see
    `redirect_world`); `set_link`, `set_rtt`, `cut` and `heal` shape the links at any
    time. It runs its own event loop in a daemon thread, so a synchronous test or
    benchmark drives it directly; `close()` (or the context manager) stops it and closes
    every relayed connection.

    `window_bytes` bounds the bytes held per direction of a connection (the relay stops
    reading beyond it, so the sender feels the link's back pressure): 8 MiB, about
    Linux's default maximum TCP window. A link with a bandwidth cap holds at most twice
    its bandwidth-delay product (at least 64 KiB), as a bottleneck router's buffer
    would, and the relay's sockets keep small kernel buffers (`socket_buffer_bytes`), so
    that what waits for a slow link waits here, where the link's timing applies, not
    in loopback's large buffers.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        seed: int = 0,
        window_bytes: int = 8 << 20,
        socket_buffer_bytes: int = 64 << 10,
    ) -> None:
        if window_bytes < READ_BYTES:
            raise ValueError(f"window_bytes must be at least {READ_BYTES}")
        self.host = host
        self.window_bytes = window_bytes
        self.socket_buffer_bytes = socket_buffer_bytes
        self._links: dict[tuple[int, int], Link] = {}
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.relayed: dict[tuple[int, int], int] = {}
        """Bytes delivered per direction (a, b) so far."""
        self.connections = 0
        """Connections accepted so far, over every link."""
        self._changed = asyncio.Event()
        """Set (and replaced) whenever a link changes: what a cut direction waits on."""
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="wan")
        self._thread.start()
        self._closed = False

    def __enter__(self) -> WanEmulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, _T], timeout_s: float = 10.0) -> _T:
        if self._closed:
            coro.close()
            raise RuntimeError("the WAN emulator is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    # -- links ---------------------------------------------------------------------------

    def link(self, a: int, b: int, target: tuple[str, int]) -> tuple[str, int]:
        """A listener for connections node `a` opens to node `b`, relayed to `target`
        (`b`'s real transport address); returns the listener's address."""
        if a == b:
            raise ValueError("a node has no link to itself")
        return self._call(self._listen(a, b, target))

    def set_link(self, a: int, b: int, link: Link) -> None:
        """Shape the direction from `a` to `b` (chunks already queued keep their time)."""
        self._links[(a, b)] = link
        self._notify()

    def _notify(self) -> None:
        if not self._closed:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def link_of(self, a: int, b: int) -> Link:
        return self._links.get((a, b), _OPEN)

    def set_rtt(
        self,
        nodes: Iterable[int],
        rtt_s: float,
        *,
        jitter_s: float = 0.0,
        bandwidth_bytes_per_s: float | None = None,
    ) -> None:
        """Every pair among `nodes`, both ways: one-way delay `rtt_s / 2`, the jitter and
        the bandwidth cap given; cuts stay as they are."""
        ids = list(nodes)
        for a in ids:
            for b in ids:
                if a != b:
                    self._links[(a, b)] = replace(
                        self.link_of(a, b),
                        delay_s=rtt_s / 2,
                        jitter_s=jitter_s,
                        bandwidth_bytes_per_s=bandwidth_bytes_per_s,
                    )
        self._notify()

    def cut(self, a: int, b: int) -> None:
        """Nothing flows between `a` and `b`, either way, until `heal(a, b)`."""
        for key in ((a, b), (b, a)):
            self._links[key] = replace(self.link_of(*key), cut=True)
        self._notify()

    def heal(self, a: int, b: int) -> None:
        for key in ((a, b), (b, a)):
            self._links[key] = replace(self.link_of(*key), cut=False)
        self._notify()

    def isolate(self, a: int, others: Iterable[int]) -> None:
        """Cut `a` from each of `others`."""
        for b in others:
            if b != a:
                self.cut(a, b)

    # -- relay ---------------------------------------------------------------------------

    async def _listen(self, a: int, b: int, target: tuple[str, int]) -> tuple[str, int]:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._spawn(self._relay(a, b, target, reader, writer))

        server = await asyncio.start_server(accepted, self.host, 0)
        self._servers.append(server)
        host, port = server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(
        self,
        a: int,
        b: int,
        target: tuple[str, int],
        down_reader: asyncio.StreamReader,
        down_writer: asyncio.StreamWriter,
    ) -> None:
        self.connections += 1
        self._writers.add(down_writer)
        self._shrink_buffers(down_writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            # The connection's setup crosses the link once each way (SYN, SYN-ACK).
            await self._wait_open(a, b)
            await asyncio.sleep(self.link_of(a, b).delay_s + self.link_of(b, a).delay_s)
            try:
                up_reader, up_writer = await asyncio.open_connection(*target)
            except OSError:
                return  # nothing listens there (the node is down): the dialer sees EOF
            self._writers.add(up_writer)
            self._shrink_buffers(up_writer)
            await asyncio.gather(
                self._pump(a, b, down_reader, up_writer),
                self._pump(b, a, up_reader, down_writer),
            )
        finally:
            for w in (down_writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    def _window(self, a: int, b: int) -> int:
        link = self.link_of(a, b)
        if link.bandwidth_bytes_per_s is None:
            return self.window_bytes
        rtt = link.delay_s + self.link_of(b, a).delay_s
        bdp = int(link.bandwidth_bytes_per_s * rtt)
        return min(self.window_bytes, max(READ_BYTES, 2 * bdp))

    def _shrink_buffers(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, self.socket_buffer_bytes)

    async def _wait_open(self, a: int, b: int) -> None:
        while self.link_of(a, b).cut:
            await self._changed.wait()

    async def _pump(
        self, a: int, b: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Move bytes from `a`'s side to `b`'s, each chunk released at its time."""
        loop = asyncio.get_running_loop()
        chunks: deque[tuple[float, bytes]] = deque()
        queued = 0
        more = asyncio.Event()
        room = asyncio.Event()
        key = (a, b)

        async def take() -> None:
            nonlocal queued
            link_free = 0.0
            last = 0.0
            while True:
                while queued >= self._window(a, b):
                    room.clear()
                    await room.wait()
                await self._wait_open(a, b)
                try:
                    data = await reader.read(READ_BYTES)
                except OSError:
                    data = b""
                now = loop.time()
                link = self.link_of(a, b)
                start = now
                if link.bandwidth_bytes_per_s is not None and data:
                    link_free = max(now, link_free) + len(data) / link.bandwidth_bytes_per_s
                    start = link_free
                delay = link.delay_s
                if link.jitter_s:
                    delay = max(0.0, delay + self._random.uniform(-link.jitter_s, link.jitter_s))
                last = max(last, start + delay)
                chunks.append((last, data))  # b"": the end of the stream, delivered in turn
                queued += len(data)
                more.set()
                if not data:
                    return

        async def give() -> None:
            nonlocal queued
            while True:
                while not chunks:
                    more.clear()
                    await more.wait()
                due, data = chunks[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._wait_open(a, b)
                chunks.popleft()
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                queued -= len(data)
                room.set()
                writer.write(data)
                self.relayed[key] = self.relayed.get(key, 0) + len(data)
                try:
                    await writer.drain()
                except OSError:
                    return

        taker = loop.create_task(take())
        try:
            await give()
        finally:
            taker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await taker

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening, close every relayed connection and stop the thread."""
        if self._closed:
            return

        async def stop() -> None:
            for server in self._servers:
                server.close()
            for writer in list(self._writers):
                writer.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(TimeoutError, RuntimeError):
            self._call(stop(), 5.0)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()


def routes_for(
    emulator: WanEmulator, transports: Mapping[int, tuple[str, int]]
) -> dict[int, dict[int, tuple[str, int]]]:
    """Links between every ordered pair of `transports` (node id: its real transport
    address); returns, per node, where it must dial each other node."""
    return {
        a: {b: emulator.link(a, b, address) for b, address in transports.items() if b != a}
        for a in transports
    }


def format_routes(routes: Mapping[int, tuple[str, int]]) -> str:
    """`{2: ("127.0.0.1", 4100)}` as "2=127.0.0.1:4100" (comma-separated), for a node's
    command line."""
    return ",".join(f"{node}={host}:{port}" for node, (host, port) in sorted(routes.items()))


def parse_routes(text: str) -> dict[int, tuple[str, int]]:
    """The inverse of `format_routes`; raises ValueError naming a malformed part."""
    routes: dict[int, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        node, sep, address = part.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not node.isdigit() or not port.isdigit() or not host:
            raise ValueError(f"route {part!r} is not 'node=host:port'")
        routes[int(node)] = (host, int(port))
    return routes


def redirect_world(routes: Mapping[int, tuple[str, int]], *, base: World | None = None) -> World:
    """A `World` whose transport dials each node of `routes` at its relay address, from
    the first connection on (pass it to `CopyCat(config, world=...)`)."""
    start = World() if base is None else base

    def transport(cfg: TransportConfig) -> Transport:
        hooks = FaultHooks()
        for node, (host, port) in routes.items():
            hooks.redirect(node, host, port)
        return Endpoint(cfg, faults=hooks)

    build: Callable[[TransportConfig], Transport] = transport
    return replace(start, transport=build)
