# What the layers above need from a transport: the `Transport` protocol.
#
# What lives here: the protocol only, so the host and the node depend on an interface
# that `Endpoint` (TCP) and the simulator's in-memory network both satisfy.
#
# What must not: behaviour. The contract is in `_endpoint.py`'s module docstring and
# docs/wire.md; an implementation must keep all of it (order per peer, drops reported
# through the unreachable handler, requests that time out or fail typed).
"""The `Transport` protocol that `Endpoint` implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterable

    from copycat.raft import InstallSnapshot, Message
    from copycat.transport._endpoint import (
        MessageHandler,
        RequestHandler,
        SnapshotHandler,
        UnreachableHandler,
    )


class Transport(Protocol):
    """One node's link to every other node: raft messages, snapshots and requests."""

    @property
    def address(self) -> tuple[str, int]: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def set_message_handler(self, handler: MessageHandler | None) -> None: ...
    def set_unreachable_handler(self, handler: UnreachableHandler | None) -> None: ...
    def set_snapshot_handler(self, handler: SnapshotHandler | None) -> None: ...
    def register_request_handler(self, method: str, handler: RequestHandler) -> None: ...
    def add_peer(self, node_id: int, host: str, port: int) -> None: ...
    def remove_peer(self, node_id: int) -> None: ...
    def send(self, group: int, message: Message) -> None: ...
    def flush(self) -> None: ...
    async def send_snapshot(
        self,
        group: int,
        message: InstallSnapshot,
        chunks: AsyncIterable[bytes | bytearray | memoryview] | None = None,
    ) -> None: ...
    async def request(
        self, node_id: int, method: str, body: bytes = b"", *, timeout_s: float | None = None
    ) -> bytes: ...
