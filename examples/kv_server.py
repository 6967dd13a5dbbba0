"""A small key-value HTTP server on CopyCat: the data structure server the original
README promised, on top of the replicated hashmap (examples/hashmap.py).

    GET    /keys/K    200 with the value (a local read: fast, possibly stale), or 404
    PUT    /keys/K    the request body (UTF-8) becomes K's value; 204 once committed
    DELETE /keys/K    removes K; 204 once committed
    GET    /keys      200 with the keys as a JSON list

Unknown paths answer 404, other methods 405, malformed requests 400, bodies over
--max-body-bytes 413. A write that CopyCat could not commit answers 503 (its outcome is
then unknown: it is applied at most once).

One server:

    python examples/kv_server.py --data-dir /tmp/kv1 --http-port 8001

A three-node cluster on one machine, one terminal each (start the first one first;
each server holds a full copy of the map):

    python examples/kv_server.py --node-id 1 --data-dir /tmp/kv1 --http-port 8001 \\
        --port 7001 --gossip-port 7101
    python examples/kv_server.py --node-id 2 --data-dir /tmp/kv2 --http-port 8002 \\
        --port 7002 --gossip-port 7102 --peers 127.0.0.1:7101
    python examples/kv_server.py --node-id 3 --data-dir /tmp/kv3 --http-port 8003 \\
        --port 7003 --gossip-port 7103 --peers 127.0.0.1:7101

    curl -X PUT --data world localhost:8001/keys/hello
    curl localhost:8003/keys/hello

The HTTP/1.1 handling is a deliberately small asyncio.start_server handler (standard
library only; keep-alive, Content-Length bodies, no chunked requests), not a
production web server: put a real one (aiohttp, uvicorn) in front for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote

# examples/ is not a package: `python examples/kv_server.py` puts this directory first
# on sys.path, so the map of examples/hashmap.py imports as `hashmap`.
from hashmap import MAP_ID, ReplicatedMap

import copycat
from copycat.errors import CopyCatError

log = logging.getLogger("kv_server")

MAX_LINE_BYTES: Final = 8 * 1024
"""Longest request line or header line accepted (longer: 400)."""
MAX_HEADERS: Final = 100
"""Most header lines accepted in one request (more: 400)."""
MAX_KEY_BYTES: Final = 1024
"""Longest key accepted, in UTF-8 bytes after percent-decoding (longer: 400)."""
IDLE_TIMEOUT_S: Final = 30.0
"""How long a connection may sit between requests (or inside one) before it is closed."""


class BadRequest(Exception):
    """The request cannot be parsed: answer 400 and close the connection."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def text(status: HTTPStatus, message: str) -> Response:
    return Response(status=status, body=(message + "\n").encode())


# -- HTTP/1.1: just enough of it ------------------------------------------------------------


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """One CRLF- (or LF-) terminated line without its terminator; b"" at a clean EOF."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise BadRequest("the connection closed in the middle of a line") from exc
        return b""
    except asyncio.LimitOverrunError as exc:
        raise BadRequest(f"a line is longer than {MAX_LINE_BYTES} bytes") from exc
    return line.rstrip(b"\r\n")


async def read_request(reader: asyncio.StreamReader, max_body_bytes: int) -> Request | None:
    """The next request on the connection, or None when the client closed it."""
    line = await read_line(reader)
    while line == b"":  # RFC 9112 2.2: ignore empty lines before a request line
        if reader.at_eof():
            return None
        line = await read_line(reader)
    try:
        method, target, version = line.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("malformed request line") from exc
    if version not in ("HTTP/1.1", "HTTP/1.0") or not method.isalpha() or not target:
        raise BadRequest("malformed request line")
    headers: dict[str, str] = {}
    while True:
        line = await read_line(reader)
        if not line:
            break
        if len(headers) >= MAX_HEADERS:
            raise BadRequest(f"more than {MAX_HEADERS} headers")
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header line")
        try:
            headers[name.decode("ascii").lower()] = value.decode("latin-1").strip()
        except UnicodeDecodeError as exc:
            raise BadRequest("malformed header name") from exc
    if "transfer-encoding" in headers:
        raise BadRequest("chunked request bodies are not supported", HTTPStatus.NOT_IMPLEMENTED)
    body = b""
    if "content-length" in headers:
        raw = headers["content-length"]
        if not raw.isdigit():
            raise BadRequest("malformed Content-Length")
        length = int(raw)
        if length > max_body_bytes:
            raise BadRequest(
                f"the body is larger than {max_body_bytes} bytes",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise BadRequest("the body is shorter than its Content-Length") from exc
    return Request(method=method, path=target, version=version, headers=headers, body=body)


def render(response: Response, *, keep_alive: bool, head: bool = False) -> bytes:
    """The response's bytes; for a HEAD request (`head`), its headers only."""
    status = response.status
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    headers = {
        "Content-Length": str(len(response.body)),
        "Connection": "keep-alive" if keep_alive else "close",
        **response.headers,
    }
    if response.body:
        headers["Content-Type"] = response.content_type
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head else head_bytes + response.body


# -- the key-value routes ---------------------------------------------------------------------


class KeyValueServer:
    """Serves the routes of this module's docstring over a `ReplicatedMap`."""

    def __init__(self, the_map: ReplicatedMap, *, max_body_bytes: int) -> None:
        self.map = the_map
        self.max_body_bytes = max_body_bytes
        self._connections: set[asyncio.Task[None]] = set()

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or idled too long
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    request = await read_request(reader, self.max_body_bytes)
            except BadRequest as exc:
                # The stream may be anywhere inside the broken request: answer and close.
                writer.write(render(text(exc.status, str(exc)), keep_alive=False))
                await writer.drain()
                return
            if request is None:
                return
            connection = request.headers.get("connection", "").lower()
            keep_alive = connection != "close" and (
                request.version == "HTTP/1.1" or connection == "keep-alive"
            )
            response = await self.route(request)
            writer.write(render(response, keep_alive=keep_alive, head=request.method == "HEAD"))
            await writer.drain()
            if not keep_alive:
                return

    async def route(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/keys":
            if request.method not in ("GET", "HEAD"):
                return Response(
                    status=HTTPStatus.METHOD_NOT_ALLOWED, headers={"Allow": "GET, HEAD"}
                )
            return Response(
                status=HTTPStatus.OK,
                body=json.dumps(self.map.keys()).encode() + b"\n",
                content_type="application/json",
            )
        if not path.startswith("/keys/"):
            return text(HTTPStatus.NOT_FOUND, f"no such path: {path}; try /keys/<key>")
        try:
            key = unquote(path.removeprefix("/keys/"), errors="strict")
        except UnicodeDecodeError:
            return text(HTTPStatus.BAD_REQUEST, "the key is not UTF-8 after percent-decoding")
        if not key or "/" in key or len(key.encode()) > MAX_KEY_BYTES:
            return text(HTTPStatus.BAD_REQUEST, f"a key is 1 to {MAX_KEY_BYTES} bytes, no '/'")
        try:
            if request.method in ("GET", "HEAD"):
                value = self.map.get(key)
                if value is None:
                    return text(HTTPStatus.NOT_FOUND, f"no key {key!r}")
                return Response(status=HTTPStatus.OK, body=value.encode())
            if request.method == "PUT":
                try:
                    value = request.body.decode("utf-8")
                except UnicodeDecodeError:
                    return text(HTTPStatus.BAD_REQUEST, "the value is not UTF-8")
                await self.map.put(key, value)
                return Response(status=HTTPStatus.NO_CONTENT)
            if request.method == "DELETE":
                await self.map.delete(key)
                return Response(status=HTTPStatus.NO_CONTENT)
        except CopyCatError as exc:
            log.warning("%s %s failed: %r", request.method, key, exc)
            return text(HTTPStatus.SERVICE_UNAVAILABLE, f"not committed ({type(exc).__name__})")
        return Response(
            status=HTTPStatus.METHOD_NOT_ALLOWED, headers={"Allow": "GET, HEAD, PUT, DELETE"}
        )

    async def close_connections(self) -> None:
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=5)


# -- the process ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A key-value HTTP server replicated by CopyCat (GET/PUT/DELETE /keys/K).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--http-host", default="127.0.0.1", help="address the HTTP server binds")
    parser.add_argument(
        "--http-port", type=int, default=8080, help="HTTP port (0: pick a free one)"
    )
    parser.add_argument(
        "--hostname", default="127.0.0.1", help="this node's address in the CopyCat cluster"
    )
    parser.add_argument("--port", type=int, default=7458, help="CopyCat (raft transport) port")
    parser.add_argument("--gossip-port", type=int, default=7459, help="gossip port")
    parser.add_argument(
        "--peers",
        default="",
        help="gossip addresses host:port of nodes already in the cluster, separated by "
        "commas or spaces; empty starts a new cluster",
    )
    parser.add_argument(
        "--data-dir", default="./copy-cat-db", help="this node's data dir (one per node)"
    )
    parser.add_argument(
        "--node-id",
        type=int,
        default=None,
        help="this node's id, a positive integer unique in the cluster (None: generated "
        "once and kept in the data dir)",
    )
    parser.add_argument(
        "--data-structure-id", default=MAP_ID, help="the map's data structure id (a ULID)"
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=1000,
        help="snapshot the map every this many applied writes",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=64 * 1024, help="largest PUT body accepted"
    )
    parser.add_argument(
        "--durable", action="store_true", help="fsync every write (slower; survives power loss)"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    config = copycat.Config.local(
        hostname=args.hostname,
        port=args.port,
        gossip_port=args.gossip_port,
        peers_to_contact=[p for p in args.peers.replace(",", " ").split() if p],
        data_dir=args.data_dir,
        node_id=args.node_id,
        snapshot_every_entries=args.snapshot_every,
        durable=args.durable,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with copycat.CopyCat(config) as cc:
        the_map = await ReplicatedMap.open(cc, args.data_structure_id)
        kv = KeyValueServer(the_map, max_body_bytes=args.max_body_bytes)
        server = await asyncio.start_server(
            kv.handle_connection, args.http_host, args.http_port, limit=MAX_LINE_BYTES
        )
        host, port = server.sockets[0].getsockname()[:2]
        print(
            f"node {cc.node_id}: serving map {args.data_structure_id} on http://{host}:{port} "
            f"(CopyCat port {args.port}, gossip port {args.gossip_port})",
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            print(f"node {cc.node_id}: stopping", flush=True)
            server.close()
            await kv.close_connections()
            await server.wait_closed()
            await the_map.close(leave=False)  # keep the member for the next start
    print("stopped", flush=True)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        copycat.run(serve(args))
    except CopyCatError as exc:
        print(f"kv_server: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
