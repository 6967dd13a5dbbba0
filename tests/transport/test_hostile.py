"""Hostile input: every kind is refused and counted by reason, logged at most once per
peer per interval, and a concurrent healthy link keeps delivering throughout."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

import pytest

from copycat.transport import Endpoint, TransportConfig
from copycat.transport._frames import FRAME_HEADER, HANDSHAKE_PREFIX, FrameKind
from tests.transport.conftest import (
    WAIT_S,
    Collector,
    append,
    config,
    endpoints,
    eventually,
    hello,
    read_until_closed,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

HOSTILE_ID = 66


async def _healthy_traffic(sender: Endpoint, inbox: Collector, stop: asyncio.Event) -> int:
    """Send from node 1 to node 2 every few ms until `stop`; returns how many were sent."""
    i = 0
    while not stop.is_set():
        sender.send(1, append(1, 2, i))
        i += 1
        await asyncio.sleep(0.005)
    return i


async def _with_healthy_link(
    attack: Callable[[Endpoint], Awaitable[None]], **server_cfg: float
) -> Endpoint:
    """Run `attack` against node 2 while node 1 streams messages to it; check every
    message of the healthy link arrived, in order. Returns node 2 (closed)."""
    inbox = Collector()
    async with endpoints(config(1), config(2, **server_cfg)) as (a, b):
        b.set_message_handler(inbox)
        stop = asyncio.Event()
        traffic = asyncio.create_task(_healthy_traffic(a, inbox, stop))
        try:
            await attack(b)
        finally:
            stop.set()
            sent = await traffic
        await inbox.wait(sent)
        assert [m.prev_index for _, _, m in inbox.items] == list(range(sent))
        assert sent > 0
        return b


async def _connect(ep: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*ep.address)


async def _open_as_peer(ep: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection that passed the handshake as node HOSTILE_ID."""
    reader, writer = await _connect(ep)
    writer.write(hello(HOSTILE_ID))
    prefix = await reader.readexactly(HANDSHAKE_PREFIX.size)
    _, _, length = HANDSHAKE_PREFIX.unpack(prefix)
    await reader.readexactly(length)
    return reader, writer


@pytest.mark.asyncio
async def test_random_bytes_are_refused_and_counted() -> None:
    async def attack(b: Endpoint) -> None:
        for _ in range(5):
            reader, writer = await _connect(b)
            writer.write(b"GET / HTTP/1.1\r\n" + os.urandom(200))
            await read_until_closed(reader)
            writer.close()
        # Random bytes after a valid handshake: refused for whatever they break.
        for _ in range(5):
            reader, writer = await _open_as_peer(b)
            writer.write(os.urandom(64) + b"\xff" * 8)
            await read_until_closed(reader)
            writer.close()

    b = await _with_healthy_link(attack)
    refused = b.stats().refused
    assert refused.get("bad_magic") == 5
    assert b.stats().refused_total == 10


@pytest.mark.asyncio
async def test_a_length_over_the_maximum_is_refused_before_allocation() -> None:
    async def attack(b: Endpoint) -> None:
        reader, writer = await _open_as_peer(b)
        writer.write(FRAME_HEADER.pack(0xFFFF_FFFF, FrameKind.MESSAGES, 0))
        await read_until_closed(reader)
        writer.close()
        reader, writer = await _open_as_peer(b)
        writer.write(FRAME_HEADER.pack((64 << 10) + 1, FrameKind.MESSAGES, 0))
        await read_until_closed(reader)
        writer.close()

    b = await _with_healthy_link(attack, max_frame_bytes=64 << 10, snapshot_chunk_bytes=32 << 10)
    assert b.stats().refused.get("frame_too_large") == 2


@pytest.mark.asyncio
async def test_truncated_frames_are_refused() -> None:
    async def attack(b: Endpoint) -> None:
        reader, writer = await _open_as_peer(b)
        writer.write(FRAME_HEADER.pack(1000, FrameKind.MESSAGES, 0) + b"\x00" * 500)
        await writer.drain()
        writer.write_eof()
        await read_until_closed(reader)
        writer.close()
        # A frame whose msgpack body is cut short inside a valid length.
        reader, writer = await _open_as_peer(b)
        body = b"\x91\x99\x01"  # array(1) of array(9) with one element
        writer.write(FRAME_HEADER.pack(len(body), FrameKind.MESSAGES, 0) + body)
        await read_until_closed(reader)
        writer.close()

    b = await _with_healthy_link(attack)
    refused = b.stats().refused
    assert refused.get("truncated") == 1
    assert refused.get("bad_msgpack", 0) + refused.get("bad_message", 0) == 1


@pytest.mark.asyncio
async def test_a_wrong_protocol_version_is_refused_with_a_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replies: list[bytes] = []

    async def attack(b: Endpoint) -> None:
        reader, writer = await _connect(b)
        writer.write(hello(HOSTILE_ID, version=99))
        replies.append(await read_until_closed(reader))
        writer.close()

    with caplog.at_level(logging.WARNING, logger="copycat.transport"):
        b = await _with_healthy_link(attack)
    assert b.stats().refused.get("version") == 1
    assert b"version 99 is not supported" in replies[0]
    assert any("version 99" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_wrong_cluster_name_is_refused_and_logged_on_both_sides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def attack(b: Endpoint) -> None:
        reader, writer = await _connect(b)
        writer.write(hello(HOSTILE_ID, cluster="other"))
        await read_until_closed(reader)
        writer.close()
        # A real endpoint of another cluster: it logs the refusal on its side too.
        stranger = Endpoint(
            TransportConfig(node_id=3, cluster_name="other", reconnect_initial_s=5.0)
        )
        await stranger.start()
        try:
            stranger.add_peer(2, *b.address)  # node 3 dials node 2 when it has traffic
            stranger.send(1, append(3, 2, 0))
            await eventually(lambda: stranger.stats().dial_failures >= 1)
            assert stranger.stats().refused.get("peer_refused") == 1
        finally:
            await stranger.close()

    with caplog.at_level(logging.WARNING, logger="copycat.transport"):
        b = await _with_healthy_link(attack)
    assert b.stats().refused.get("cluster_name") == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("handshake refused: cluster name 'other'" in m for m in messages)
    assert any("refused our handshake" in m and "cluster_name" in m for m in messages)


@pytest.mark.asyncio
async def test_a_slowloris_peer_is_cut_off_by_the_handshake_and_frame_timeouts() -> None:
    async def trickle(
        writer: asyncio.StreamWriter, data: bytes, reader: asyncio.StreamReader
    ) -> None:
        async with asyncio.timeout(WAIT_S):
            for byte in data:
                if reader.at_eof():
                    return
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                except ConnectionError:
                    return
                await asyncio.sleep(1.0)  # one byte per second

    async def attack(b: Endpoint) -> None:
        reader, writer = await _connect(b)
        await asyncio.gather(trickle(writer, hello(HOSTILE_ID), reader), read_until_closed(reader))
        writer.close()
        reader, writer = await _open_as_peer(b)
        frame = FRAME_HEADER.pack(100, FrameKind.MESSAGES, 0) + b"\x90" * 100
        await asyncio.gather(trickle(writer, frame, reader), read_until_closed(reader))
        writer.close()

    b = await _with_healthy_link(attack, handshake_timeout_s=1.5, frame_timeout_s=1.5)
    refused = b.stats().refused
    assert refused.get("handshake_timeout") == 1
    assert refused.get("frame_timeout") == 1


@pytest.mark.asyncio
async def test_spoofed_senders_and_unknown_kinds_are_refused() -> None:
    from copycat.transport._codec import encode_message

    async def attack(b: Endpoint) -> None:
        reader, writer = await _open_as_peer(b)
        msg = encode_message(1, append(1, 2, 0))  # claims to come from node 1
        body = b"\x91" + msg
        writer.write(FRAME_HEADER.pack(len(body), FrameKind.MESSAGES, 0) + body)
        await read_until_closed(reader)
        writer.close()
        reader, writer = await _open_as_peer(b)
        writer.write(FRAME_HEADER.pack(0, 200, 0))
        await read_until_closed(reader)
        writer.close()
        reader, writer = await _open_as_peer(b)
        writer.write(FRAME_HEADER.pack(0, FrameKind.KEEPALIVE, 0x80))
        await read_until_closed(reader)
        writer.close()

    b = await _with_healthy_link(attack)
    refused = b.stats().refused
    assert refused.get("bad_message") == 1
    assert refused.get("unknown_kind") == 1
    assert refused.get("bad_flags") == 1


@pytest.mark.asyncio
async def test_refusals_are_logged_once_per_peer_and_reason_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with endpoints(config(2)) as (b,):
        with caplog.at_level(logging.WARNING, logger="copycat.transport"):
            for _ in range(6):
                reader, writer = await _connect(b)
                writer.write(b"\x00" * 16)
                await read_until_closed(reader)
                writer.close()
        assert b.stats().refused.get("bad_magic") == 6
        logged = [r for r in caplog.records if "bad_magic" in r.getMessage()]
        # The source port differs per connection; the interval is per address.
        assert 1 <= len(logged) <= 6


@pytest.mark.asyncio
async def test_too_many_pending_handshakes_are_shed() -> None:
    async def attack(b: Endpoint) -> None:
        conns = [await _connect(b) for _ in range(4)]
        await eventually(lambda: b.stats().refused.get("too_many_handshakes", 0) >= 2)
        for _, writer in conns:
            writer.close()

    b = await _with_healthy_link(attack, max_pending_handshakes=2)
    assert b.stats().refused["too_many_handshakes"] >= 2
