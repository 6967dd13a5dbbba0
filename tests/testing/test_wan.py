"""The WAN emulator: bytes cross a link in order, no sooner than its delay, paced by its
bandwidth cap, and not at all while it is cut; endpoints redirected through it talk over
it. Every wait is bounded; the only time checks are lower bounds (a link may be slower
on a loaded machine, never faster than its delay)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

from copycat.raft import Heartbeat
from copycat.testing.wan import Link, WanEmulator, format_routes, parse_routes, routes_for
from copycat.transport import Endpoint, FaultHooks
from tests.transport.conftest import Collector, config

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(60)


class Echo:
    """A TCP echo server on loopback, in a thread."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()[:2]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.sock.close()


def read_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(n - len(out))
        assert data, "the relay closed the connection"
        out += data
    return bytes(out)


def test_bytes_cross_in_order_after_both_delays(echo: Echo) -> None:
    with WanEmulator() as wan:
        address = wan.link(1, 2, echo.address)
        wan.set_link(1, 2, Link(delay_s=0.05, jitter_s=0.04))
        wan.set_link(2, 1, Link(delay_s=0.03))
        with socket.create_connection(address, timeout=10) as sock:
            payload = b"".join(i.to_bytes(4, "big") for i in range(20_000))
            started = time.monotonic()
            for start in range(0, len(payload), 997):  # many small writes, jittered
                sock.sendall(payload[start : start + 997])
            assert read_exactly(sock, len(payload)) == payload  # in order, nothing lost
            assert time.monotonic() - started >= 0.08 - 0.04  # a round trip, less jitter
        assert wan.relayed[(1, 2)] == len(payload) == wan.relayed[(2, 1)]


def test_a_bandwidth_cap_paces_the_bytes(echo: Echo) -> None:
    with WanEmulator() as wan:
        address = wan.link(1, 2, echo.address)
        wan.set_link(1, 2, Link(bandwidth_bytes_per_s=1 << 20))  # 1 MiB/s one way
        with socket.create_connection(address, timeout=10) as sock:
            payload = bytes(range(256)) * (1 << 11)  # 512 KiB
            started = time.monotonic()
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            assert read_exactly(sock, len(payload)) == payload
            sender.join(10)
            assert time.monotonic() - started >= 0.5 * 0.9  # 512 KiB at 1 MiB/s


def test_nothing_crosses_a_cut_link_until_it_heals(echo: Echo) -> None:
    with WanEmulator() as wan:
        address = wan.link(1, 2, echo.address)
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"before")
            assert read_exactly(sock, 6) == b"before"
            wan.cut(1, 2)
            sock.sendall(b"during")
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(16)
            wan.heal(1, 2)
            sock.settimeout(10)
            assert read_exactly(sock, 6) == b"during"  # held, as TCP retransmits, not lost


def test_a_closed_target_closes_the_relayed_connection(echo: Echo) -> None:
    with WanEmulator() as wan:
        dead = socket.create_server(("127.0.0.1", 0))
        target = dead.getsockname()[:2]
        dead.close()  # nothing listens there now: a killed node
        address = wan.link(1, 2, target)
        with socket.create_connection(address, timeout=10) as sock:
            assert sock.recv(16) == b""


def test_routes_round_trip_through_text() -> None:
    routes = {2: ("127.0.0.1", 4100), 13: ("::1", 9)}
    assert parse_routes(format_routes(routes)) == routes
    assert parse_routes("") == {}
    with pytest.raises(ValueError, match="'2=nowhere'"):
        parse_routes("2=nowhere")


@pytest.mark.asyncio
async def test_endpoints_redirected_through_the_emulator_talk_over_it() -> None:
    inbox = Collector()
    one = Endpoint(config(1), faults=FaultHooks())
    two = Endpoint(config(2))
    two.set_message_handler(inbox)
    await one.start()
    await two.start()
    wan = WanEmulator()
    try:
        routes = await asyncio.to_thread(routes_for, wan, {1: one.address, 2: two.address})
        wan.set_rtt([1, 2], 0.06)
        host, port = routes[1][2]
        one.faults.redirect(2, host, port)
        one.add_peer(2, *two.address)  # the address gossip would publish: not dialed
        started = time.monotonic()
        one.send(7, Heartbeat(term=1, sender=1, to=2, commit=0))
        await inbox.wait(1)
        assert time.monotonic() - started >= 0.03  # one way
        assert wan.connections == 1
        assert wan.relayed[(1, 2)] > 0  # the handshake went both ways
        assert wan.relayed[(2, 1)] > 0
    finally:
        await one.close()
        await two.close()
        wan.close()
