"""examples/kv_server.py as a process on loopback: the routes, malformed input, a
graceful stop, a restart on the same data dir, and two servers sharing one map."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

from ._run import KvServer, run_script

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

REPLICATION_TIMEOUT_S = 20.0


@pytest.fixture
def servers() -> Iterator[list[KvServer]]:
    """Servers a test starts; each is stopped (by its own process handle) afterwards."""
    started: list[KvServer] = []
    try:
        yield started
    finally:
        for server in reversed(started):
            server.stop()


def _start(servers: list[KvServer], server: KvServer) -> KvServer:
    servers.append(server)
    server.start()
    return server


def _wait_for(server: KvServer, path: str, expected: tuple[int, bytes]) -> None:
    deadline = time.monotonic() + REPLICATION_TIMEOUT_S
    got = server.request("GET", path)
    while got != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        got = server.request("GET", path)
    assert got == expected, f"{path} on node {server.node_id}: {got}\n{server.text()}"


def test_help() -> None:
    result = run_script("kv_server.py", "--help", timeout_s=30)
    assert result.returncode == 0, result.stderr
    for flag in ("--http-port", "--port", "--gossip-port", "--peers", "--data-dir", "--node-id"):
        assert flag in result.stdout


def test_put_get_delete_and_errors(tmp_path: Path, servers: list[KvServer]) -> None:
    kv = _start(servers, KvServer(data_dir=tmp_path / "kv1", node_id=1))

    assert kv.request("GET", "/keys/hello") == (404, b"no key 'hello'\n")
    assert kv.request("PUT", "/keys/hello", b"world") == (204, b"")
    assert kv.request("GET", "/keys/hello") == (200, b"world")  # read your writes
    assert kv.request("PUT", "/keys/caf%C3%A9", "crème".encode()) == (204, b"")
    assert kv.request("GET", "/keys/caf%C3%A9") == (200, "crème".encode())
    status, body = kv.request("GET", "/keys")
    assert (status, json.loads(body)) == (200, ["café", "hello"])
    assert kv.request("DELETE", "/keys/hello") == (204, b"")
    assert kv.request("GET", "/keys/hello")[0] == 404
    assert kv.request("DELETE", "/keys/hello") == (204, b"")  # idempotent

    # Unknown paths, wrong methods, bad keys and values.
    assert kv.request("GET", "/nope")[0] == 404
    assert kv.request("GET", "/")[0] == 404
    assert kv.request("POST", "/keys/x", b"v")[0] == 405
    assert kv.request("PUT", "/keys", b"v")[0] == 405
    assert kv.request("GET", "/keys/")[0] == 400
    assert kv.request("GET", "/keys/a/b")[0] == 400
    assert kv.request("GET", "/keys/%FF")[0] == 400
    assert kv.request("PUT", "/keys/x", b"\xff\xfe")[0] == 400

    # Malformed requests: 400 (or 413/501), then the server closes the connection.
    assert kv.raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert kv.raw(b"GET /keys/x HTTP/9.9\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert kv.raw(b"GET /keys/x HTTP/1.1\r\nno colon here\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert kv.raw(b"PUT /keys/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n").startswith(
        b"HTTP/1.1 400 "
    )
    assert kv.raw(b"GET /" + b"x" * 20_000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    too_big = b"PUT /keys/x HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n"
    assert kv.raw(too_big).startswith(b"HTTP/1.1 413 ")
    chunked = b"PUT /keys/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert kv.raw(chunked).startswith(b"HTTP/1.1 501 ")
    assert kv.raw(b"GET /keys/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab").startswith(
        b"HTTP/1.1 400 "
    )

    # Keep-alive: two requests on one connection, the second closing it.
    two = kv.raw(
        b"PUT /keys/k HTTP/1.1\r\nContent-Length: 1\r\n\r\nv"
        b"GET /keys/k HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert two.startswith(b"HTTP/1.1 204 ")
    assert two.count(b"HTTP/1.1 ") == 2
    assert two.endswith(b"\r\n\r\nv")

    # The server still serves after all of that, and stops cleanly on SIGTERM.
    assert kv.request("GET", "/keys/k") == (200, b"v")
    assert kv.stop() == 0, kv.text()
    assert "stopped" in kv.text()

    # Restarted on the same data dir, it has the map back.
    again = _start(servers, KvServer(data_dir=tmp_path / "kv1", node_id=1))
    _wait_for(again, "/keys/k", (200, b"v"))
    assert again.request("GET", "/keys/hello")[0] == 404


def test_two_servers_share_the_map(tmp_path: Path, servers: list[KvServer]) -> None:
    first = _start(servers, KvServer(data_dir=tmp_path / "kv1", node_id=1))
    assert first.request("PUT", "/keys/before", b"join") == (204, b"")
    second = _start(
        servers,
        KvServer(data_dir=tmp_path / "kv2", node_id=2, peers=[first.gossip_address]),
    )
    # The joining server receives what was written before it came...
    _wait_for(second, "/keys/before", (200, b"join"))
    # ...and later writes through either server reach the other.
    assert first.request("PUT", "/keys/hello", b"world") == (204, b"")
    _wait_for(second, "/keys/hello", (200, b"world"))
    assert second.request("PUT", "/keys/from-2", b"two") == (204, b"")
    assert second.request("GET", "/keys/from-2") == (200, b"two")
    _wait_for(first, "/keys/from-2", (200, b"two"))
    assert second.request("DELETE", "/keys/hello") == (204, b"")
    _wait_for(first, "/keys/hello", (404, b"no key 'hello'\n"))
