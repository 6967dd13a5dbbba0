"""Endpoints on loopback: ordered delivery, requests, reconnection, backpressure, fault
hooks, compression, simultaneous dials, and the host contract's local-misuse errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import SimpleNamespace

import pytest

from copycat.errors import (
    ClosedError,
    GroupNotFoundError,
    MessageTooLargeError,
    NotLeaderError,
    PeerUnreachableError,
    RemoteError,
    RequestTimeoutError,
)
from copycat.raft import Heartbeat, InstallSnapshot, Snapshot
from copycat.transport import Endpoint, FaultHooks, run
from copycat.transport._codec import encode_handshake_body
from copycat.transport._frames import HANDSHAKE_PREFIX, PROTOCOL_VERSION, handshake_bytes
from tests.transport.conftest import (
    WAIT_S,
    Collector,
    append,
    config,
    endpoints,
    eventually,
)


@pytest.mark.asyncio
async def test_messages_of_every_group_arrive_in_order_per_peer() -> None:
    inbox = {1: Collector(), 2: Collector(), 3: Collector()}
    async with endpoints(config(1), config(2), config(3)) as eps:
        for ep in eps:
            ep.set_message_handler(inbox[ep.node_id])
        n = 3000
        for turn in range(0, n, 250):
            for i in range(turn, turn + 250):
                eps[0].send(i % 97, append(1, 2, i))
                eps[2].send((1 << 100) + i % 5, append(3, 2, i))
                eps[1].send(i % 3, append(2, 1, i))
            await asyncio.sleep(0)
        await inbox[2].wait(2 * n)
        await inbox[1].wait(n)
        for sender in (1, 3):
            got = [(g, m) for p, g, m in inbox[2].items if p == sender]
            assert [m.prev_index for _, m in got] == list(range(n))
            assert all(m.sender == sender and m.to == 2 for _, m in got)
        assert {g for p, g, _ in inbox[2].items if p == 3} == {(1 << 100) + k for k in range(5)}
        assert [m.prev_index for _, _, m in inbox[1].items] == list(range(n))
        stats = eps[1].stats()
        assert stats.messages_received == 2 * n
        assert stats.messages_sent == n
        # Coalescing: far fewer frames than messages.
        assert eps[0].stats().frames_sent < n / 10


@pytest.mark.asyncio
async def test_requests_return_bodies_and_typed_remote_errors() -> None:
    async def echo(peer: int, body: bytes) -> bytes:
        return bytes([peer]) + body

    async def not_found(peer: int, body: bytes) -> bytes:
        raise GroupNotFoundError(int(body))

    async def not_leader(peer: int, body: bytes) -> bytes:
        raise NotLeaderError(3)

    async def broken(peer: int, body: bytes) -> bytes:
        raise ValueError("handler bug")

    async def slow(peer: int, body: bytes) -> bytes:
        await asyncio.sleep(WAIT_S)
        return b""

    async with endpoints(config(1), config(2)) as (a, b):
        for name, fn in [("echo", echo), ("nf", not_found), ("nl", not_leader), ("bug", broken)]:
            b.register_request_handler(name, fn)
        b.register_request_handler("slow", slow)
        assert await a.request(2, "echo", b"hi") == b"\x01hi"
        with pytest.raises(GroupNotFoundError) as nf:
            await a.request(2, "nf", b"42")
        assert nf.value.group == 42
        with pytest.raises(NotLeaderError) as nl:
            await a.request(2, "nl")
        assert nl.value.leader_hint == 3
        with pytest.raises(RemoteError) as bug:
            await a.request(2, "bug")
        assert bug.value.code == "ValueError"
        assert bug.value.peer == 2
        with pytest.raises(RemoteError) as unknown:
            await a.request(2, "nope")
        assert unknown.value.code == "unknown_method"
        with pytest.raises(RequestTimeoutError):
            await a.request(2, "slow", timeout_s=0.2)
        # The link survives all of that.
        assert await a.request(2, "echo", b"!") == b"\x01!"
        assert b.stats().requests_served >= 2
        with pytest.raises(PeerUnreachableError):
            await a.request(9, "echo")


@pytest.mark.asyncio
async def test_reconnects_after_the_other_side_restarts() -> None:
    inbox = Collector()
    unreachable: list[tuple[int, frozenset[int] | None]] = []
    a = Endpoint(config(1, reconnect_initial_s=0.02, reconnect_max_s=0.2))
    a.set_unreachable_handler(lambda p, g: unreachable.append((p, g)))
    b = Endpoint(config(2), on_messages=inbox)
    await a.start()
    await b.start()
    port = b.address[1]
    a.add_peer(2, "127.0.0.1", port)
    b.add_peer(1, *a.address)
    b2: Endpoint | None = None
    try:
        a.send(7, append(1, 2, 0))
        await inbox.wait(1)
        await b.close()
        await eventually(lambda: unreachable)  # the lost connection is reported
        inbox2 = Collector()
        b2 = Endpoint(config(2, port=port), on_messages=inbox2)
        await b2.start()
        b2.add_peer(1, *a.address)
        i = 1
        async with asyncio.timeout(WAIT_S):
            while not inbox2.items:
                a.send(7, append(1, 2, i))
                i += 1
                await asyncio.sleep(0.02)
        # And the other direction, on the same connection.
        back = Collector()
        a.set_message_handler(back)
        b2.send(7, Heartbeat(term=1, sender=2, to=1))
        await back.wait(1)
        assert a.stats().reconnects >= 1
        assert any(p == 2 for p, _ in unreachable)
    finally:
        await a.close()
        await b.close()
        if b2 is not None:
            await b2.close()


@pytest.mark.asyncio
async def test_a_removed_peer_is_forgotten_and_an_added_again_one_carries_frames() -> None:
    """A node that left: its queue is dropped (counted), its pending request fails, its
    connection closes and sends to it are dropped; when it comes back, `add_peer` of the
    same id carries frames both ways again."""
    arrived = asyncio.Event()

    async def park(peer: int, body: bytes) -> bytes:
        arrived.set()
        await asyncio.Event().wait()  # never set: only the closed connection ends it
        return b""

    async def echo(peer: int, body: bytes) -> bytes:
        return body

    inbox = Collector()
    async with endpoints(config(1), config(2)) as (a, b):
        b.set_message_handler(inbox)
        b.register_request_handler("park", park)
        b.register_request_handler("echo", echo)
        a.send(7, append(1, 2, 0))
        await inbox.wait(1)
        pending = asyncio.ensure_future(a.request(2, "park"))
        async with asyncio.timeout(WAIT_S):
            await arrived.wait()
        for i in range(1, 4):
            a.send(7, append(1, 2, i))  # queued, not yet written (no loop turn)
        dropped = a.stats().messages_dropped_unreachable

        a.remove_peer(2)

        assert a.peer_status(2) is None
        assert a.stats().messages_dropped_unreachable == dropped + 3
        with pytest.raises(PeerUnreachableError):
            await asyncio.wait_for(pending, WAIT_S)
        a.send(7, append(1, 2, 4))  # to an unknown node: dropped and counted
        assert a.stats().messages_dropped_unreachable == dropped + 4

        def b_disconnected() -> bool:
            status = b.peer_status(1)
            return status is not None and not status.connected

        await eventually(b_disconnected)
        assert [m.prev_index for _, _, m in inbox.items] == [0]

        a.add_peer(2, *b.address)
        a.send(7, append(1, 2, 5))
        await inbox.wait(2)
        assert [m.prev_index for _, _, m in inbox.items] == [0, 5]
        back = Collector()
        a.set_message_handler(back)
        b.send(7, Heartbeat(term=1, sender=2, to=1))
        await back.wait(1)
        assert await a.request(2, "echo", b"again") == b"again"


@pytest.mark.asyncio
async def test_a_peer_removed_and_added_again_at_once_carries_frames() -> None:
    """Re-adding while the old connection is still closing: the new one takes over."""
    inbox = Collector()
    async with endpoints(config(1), config(2)) as (a, b):
        b.set_message_handler(inbox)
        a.send(7, append(1, 2, 0))
        await inbox.wait(1)
        a.remove_peer(2)
        a.add_peer(2, *b.address)
        a.send(7, append(1, 2, 1))
        await inbox.wait(2)
        assert [m.prev_index for _, _, m in inbox.items] == [0, 1]
        status = a.peer_status(2)
        assert status is not None
        assert status.connected


async def _stalled_peer(node_id: int) -> tuple[asyncio.Server, list[asyncio.StreamWriter]]:
    """A fake node that completes the handshake and then never reads again."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        prefix = await reader.readexactly(HANDSHAKE_PREFIX.size)
        _, _, length = HANDSHAKE_PREFIX.unpack(prefix)
        await reader.readexactly(length)
        body = {
            "ok": True,
            "reason": "",
            "cluster": "test",
            "node": node_id,
            "compression": "",
            "max_frame": 16 << 20,
            "versions": [1, 1],
        }
        writer.write(handshake_bytes(PROTOCOL_VERSION, encode_handshake_body(body)))
        await writer.drain()
        # Stall: read nothing more; the kernel buffers fill up.

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, writers


@pytest.mark.asyncio
async def test_a_stalled_receiver_costs_bounded_memory_and_is_reported_unreachable() -> None:
    server, writers = await _stalled_peer(2)
    unreachable: list[tuple[int, frozenset[int] | None]] = []
    cfg = config(1, send_queue_max_bytes=1 << 20, write_buffer_high_bytes=256 << 10)
    a = Endpoint(cfg, on_unreachable=lambda p, g: unreachable.append((p, g)))
    await a.start()
    try:
        a.add_peer(2, "127.0.0.1", server.sockets[0].getsockname()[1])
        data = b"z" * 10_000
        max_queued = 0
        async with asyncio.timeout(WAIT_S):
            i = 0
            while a.stats().messages_dropped_overflow == 0:
                for _ in range(50):
                    a.send(i % 4, append(1, 2, i, data))
                    i += 1
                status = a.peer_status(2)
                assert status is not None
                max_queued = max(max_queued, status.queued_bytes)
                await asyncio.sleep(0.001)
        await eventually(lambda: unreachable)
        assert max_queued <= cfg.send_queue_max_bytes
        peer, groups = unreachable[0]
        assert peer == 2
        assert groups is not None
        assert groups <= {0, 1, 2, 3}
        status = a.peer_status(2)
        assert status is not None
        assert status.connected
        assert status.write_paused
    finally:
        await a.close()
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_fault_hooks_cut_drop_and_delay_links_at_run_time() -> None:
    faults = FaultHooks(seed=1)
    inbox = Collector()
    async with endpoints(config(1), config(2), config(3), faults=faults) as eps:
        eps[1].set_message_handler(inbox)
        a, b, c = eps

        async def ping(peer: int, body: bytes) -> bytes:
            return b"pong"

        b.register_request_handler("ping", ping)
        a.send(1, append(1, 2, 0))
        await inbox.wait(1)

        faults.cut(1, 2)
        a.send(1, append(1, 2, 1))
        c.send(1, append(3, 2, 0))  # another link keeps working
        await inbox.wait(2)
        with pytest.raises(PeerUnreachableError):
            await a.request(2, "ping")
        assert [p for p, _, _ in inbox.items] == [1, 3]
        assert a.stats().messages_dropped_fault == 1

        faults.heal(1, 2)
        faults.drop(1, 2, 1.0)
        a.send(1, append(1, 2, 2))
        faults.drop(1, 2, 0.0)
        faults.delay(1, 2, 0.05)
        for i in range(3, 6):
            a.send(1, append(1, 2, i))
        await inbox.wait(5)
        assert [m.prev_index for p, _, m in inbox.items if p == 1] == [0, 3, 4, 5]
        faults.heal_all()
        assert not faults.active
        assert await a.request(2, "ping") == b"pong"


@pytest.mark.asyncio
@pytest.mark.parametrize("codec", ["zstd", "lz4"])
async def test_compression_is_negotiated_and_shrinks_large_frames(codec: str) -> None:
    pytest.importorskip("zstandard" if codec == "zstd" else "lz4")
    inbox = Collector()
    cfgs = (config(1, compression=(codec,)), config(2, compression=("zstd", "lz4")))
    async with endpoints(*cfgs) as (a, b):
        b.set_message_handler(inbox)
        data = b"compressible " * 10_000
        for i in range(20):
            a.send(5, append(1, 2, i, data))
        await inbox.wait(20)
        assert all(m.entries[0].data == data for _, _, m in inbox.items)
        assert a.stats().bytes_sent < 20 * len(data) / 10
        (conn,) = [c for c in a.connections if c.state == 2]
        assert conn.codec is not None
        assert conn.codec.name == codec


@pytest.mark.asyncio
async def test_simultaneous_dials_settle_on_one_connection() -> None:
    inbox = {1: Collector(), 2: Collector()}
    a = Endpoint(config(1), on_messages=inbox[1])
    b = Endpoint(config(2), on_messages=inbox[2])
    await a.start()
    await b.start()
    try:
        # Both learn the other's address and send in the same turn: both dial.
        a.add_peer(2, *b.address)
        b.add_peer(1, *a.address)
        for i in range(5):
            a.send(1, append(1, 2, i))
            b.send(1, append(2, 1, i))
        for round_ in range(50):
            await asyncio.sleep(0.02)
            a.send(1, append(1, 2, 100 + round_))
            b.send(1, append(2, 1, 100 + round_))
        await eventually(lambda: len(a.connections) == 1 and len(b.connections) == 1)
        await inbox[1].wait(40)
        await inbox[2].wait(40)
        for box in inbox.values():
            seq = [m.prev_index for _, _, m in box.items]
            assert seq == sorted(seq)  # some may be lost in the race, never reordered
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_unreachable_peers_are_reported_with_the_groups_dropped() -> None:
    reports: list[tuple[int, frozenset[int] | None]] = []
    cfg = config(1, reconnect_initial_s=0.05, connect_timeout_s=1.0)
    async with endpoints(cfg, on_unreachable=lambda p, g: reports.append((p, g))) as (a,):
        a.send(4, append(1, 9, 0))  # unknown peer
        await eventually(lambda: reports)
        assert reports[0] == (9, frozenset({4}))
        # A known peer with nothing listening: the dial fails, the queue is reported.
        with contextlib.closing(socket.socket()) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        a.add_peer(5, "127.0.0.1", port)
        a.send(6, append(1, 5, 0))
        a.send(7, append(1, 5, 1))
        await eventually(lambda: any(p == 5 for p, _ in reports))
        groups = set().union(*(g or set() for p, g in reports if p == 5))
        assert groups == {6, 7}
        assert a.stats().dial_failures >= 1


@pytest.mark.asyncio
async def test_local_misuse_raises_at_once() -> None:
    async with endpoints(
        config(1, max_frame_bytes=64 << 10, snapshot_chunk_bytes=32 << 10), config(2)
    ) as (a, _b):
        with pytest.raises(ValueError, match="send_snapshot"):
            a.send(1, InstallSnapshot(term=1, sender=1, to=2, snapshot=Snapshot()))
        with pytest.raises(MessageTooLargeError):
            a.send(1, append(1, 2, 0, b"x" * (64 << 10)))
        with pytest.raises(TypeError):
            a.send(1, SimpleNamespace(to=2))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="128-bit"):
            a.send(1 << 128, append(1, 2, 0))
        with pytest.raises(ValueError, match="peer id"):
            a.add_peer(1, "127.0.0.1", 1)
    with pytest.raises(ClosedError):
        a.send(1, append(1, 2, 0))


def test_runs_on_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[str, list[int]]:
        inbox = Collector()
        async with endpoints(config(1), config(2)) as (a, b):
            b.set_message_handler(inbox)
            for i in range(100):
                a.send(1, append(1, 2, i))
            await inbox.wait(100)
            return type(asyncio.get_running_loop()).__module__, [
                m.prev_index for _, _, m in inbox.items
            ]

    loop_module, seq = run(scenario())
    assert loop_module.startswith(uvloop.__name__)
    assert seq == list(range(100))


@pytest.mark.asyncio
async def test_flush_writes_what_is_queued_before_the_loop_turn_ends() -> None:
    """`flush()` (for a host about to block the loop on an fsync) writes the queued
    messages at once, in one frame, and leaves nothing for the end of the turn."""
    inbox = Collector()
    async with endpoints(config(1), config(2)) as (a, b):
        b.set_message_handler(inbox)
        a.send(1, append(1, 2, 0))
        await inbox.wait(1)  # connected
        frames, sent = a.stats().frames_sent, a.stats().messages_sent
        for i in range(1, 4):
            a.send(1, append(1, 2, i))
        assert a.stats().messages_sent == sent  # queued until the turn ends...
        a.flush()
        assert a.stats().messages_sent == sent + 3  # ...or until flush()
        assert a.stats().frames_sent == frames + 1
        await inbox.wait(4)
        assert [m.prev_index for _, _, m in inbox.items] == [0, 1, 2, 3]
