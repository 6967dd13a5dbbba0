"""A rogue peer for dialer-side tests: a plain asyncio TCP server on 127.0.0.1 that
reads a dialer's hello, answers it with whatever bytes the test chose, and then acts
as a working CopyCat peer (it records every frame and answers every REQUEST with an
ok RESPONSE). So a dialer that wrongly accepts the answer visibly delivers to it.

Every read is bounded by `WAIT_S`; `close()` drops the connections it still holds."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from copycat.transport._codec import (
    decode_handshake_body,
    decode_request,
    encode_handshake_body,
    encode_response_ok,
)
from copycat.transport._frames import (
    FRAME_HEADER,
    HANDSHAKE_PREFIX,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    FrameKind,
    handshake_bytes,
)
from tests.transport.conftest import WAIT_S

if TYPE_CHECKING:
    from types import TracebackType

ROGUE_ANSWER = b"rogue"
"""The body of every RESPONSE the rogue sends."""


def reply(
    *,
    cluster: str = "test",
    node: int = 2,
    version: int = PROTOCOL_VERSION,
    compression: str = "",
    ok: bool = True,
) -> bytes:
    """A well-formed handshake reply (docs/wire.md, "Connection and handshake"),
    built with the project's own encoder; every field can be set wrong."""
    body = {
        "ok": ok,
        "reason": "",
        "cluster": cluster,
        "node": node,
        "compression": compression,
        "max_frame": 16 << 20,
        "versions": list(SUPPORTED_VERSIONS),
    }
    return handshake_bytes(version, encode_handshake_body(body))


class RogueServer:
    """`async with RogueServer(answer) as rogue:` listens on `rogue.address`."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.hellos: list[dict[str, Any]] = []
        """Decoded hello bodies, one per connection that sent a complete hello."""
        self.frames: list[tuple[int, bytes]] = []
        """(kind, payload) of every frame received after the handshake."""
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (still known after `close()`)."""
        assert self._address is not None, "not started"
        return self._address

    async def __aenter__(self) -> RogueServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = (host, port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        async with asyncio.timeout(WAIT_S):
            await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            async with asyncio.timeout(WAIT_S):
                _magic, _version, length = HANDSHAKE_PREFIX.unpack(
                    await reader.readexactly(HANDSHAKE_PREFIX.size)
                )
                self.hellos.append(decode_handshake_body(await reader.readexactly(length)))
                writer.write(self.answer)
                while True:
                    length, kind, _flags = FRAME_HEADER.unpack(
                        await reader.readexactly(FRAME_HEADER.size)
                    )
                    payload = await reader.readexactly(length)
                    self.frames.append((kind, payload))
                    if kind == FrameKind.REQUEST:
                        request_id, _method, _body = decode_request(payload)
                        response = encode_response_ok(request_id, ROGUE_ANSWER)
                        writer.write(
                            FRAME_HEADER.pack(len(response), FrameKind.RESPONSE, 0) + response
                        )
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            # The dialer hung up (what a refusing dialer does) or went silent: the
            # test's assertions judge what happened; this connection is done.
            return
        finally:
            self._writers.discard(writer)
            writer.close()
