"""Transport counters: the mutable tallies an endpoint bumps, and the frozen
`TransportStats` snapshot it hands out.

What lives here: plain counters and their snapshot type. What must not: I/O, locks
(an endpoint lives on one event loop), or anything computed on the hot path beyond
an integer addition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportStats:
    """A snapshot of an endpoint's counters since it was created."""

    messages_sent: int = 0
    """Raft messages written to a socket."""
    messages_received: int = 0
    """Raft messages decoded and handed to the message handler."""
    bytes_sent: int = 0
    """Bytes handed to sockets, handshakes and frame headers included (before TLS)."""
    bytes_received: int = 0
    """Bytes read from sockets (after TLS decryption)."""
    frames_sent: int = 0
    frames_received: int = 0
    messages_dropped_overflow: int = 0
    """Messages dropped because the peer's send queue was full (peer reported unreachable)."""
    messages_dropped_unreachable: int = 0
    """Messages dropped because the peer was unknown, down or in reconnect backoff."""
    messages_dropped_fault: int = 0
    """Messages dropped by fault hooks (tests)."""
    connections_accepted: int = 0
    """Inbound connections that completed the handshake."""
    connections_dialed: int = 0
    """Outbound connections that completed the handshake."""
    reconnects: int = 0
    """Outbound connections established to a peer that had been connected before."""
    dial_failures: int = 0
    """Dial attempts that failed (refused, timed out, handshake refused)."""
    refused: Mapping[str, int] = field(default_factory=dict)
    """Connections or frames refused, by reason: bad_magic, version, cluster_name,
    node_id, handshake_timeout, handshake_too_large, frame_too_large, frame_timeout,
    idle_timeout, unknown_kind, bad_flags, bad_message, bad_msgpack, bad_compression,
    bad_snapshot, bad_request, bad_response, bad_handshake, truncated, tls,
    too_many_handshakes, credit_exceeded."""
    requests_sent: int = 0
    requests_served: int = 0
    snapshots_sent: int = 0
    """Snapshot streams the receiver reported installed."""
    snapshots_failed: int = 0
    """Outbound snapshot streams that failed."""
    snapshots_received: int = 0
    """Inbound snapshot streams whose handler succeeded."""
    snapshot_chunks_in_flight_max: int = 0
    """The most chunks one outbound snapshot stream has had unacknowledged at once (the
    sender's delay-based window keeps it near the link's bandwidth-delay product)."""

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


@final
class Counters:
    """What an endpoint bumps; `snapshot()` freezes it into `TransportStats`."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "connections_accepted",
        "connections_dialed",
        "dial_failures",
        "frames_received",
        "frames_sent",
        "messages_dropped_fault",
        "messages_dropped_overflow",
        "messages_dropped_unreachable",
        "messages_received",
        "messages_sent",
        "reconnects",
        "refused",
        "requests_sent",
        "requests_served",
        "snapshot_chunks_in_flight_max",
        "snapshots_failed",
        "snapshots_received",
        "snapshots_sent",
    )

    def __init__(self) -> None:
        self.messages_sent = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.frames_received = 0
        self.messages_dropped_overflow = 0
        self.messages_dropped_unreachable = 0
        self.messages_dropped_fault = 0
        self.connections_accepted = 0
        self.connections_dialed = 0
        self.reconnects = 0
        self.dial_failures = 0
        self.refused: dict[str, int] = {}
        self.requests_sent = 0
        self.requests_served = 0
        self.snapshots_sent = 0
        self.snapshots_failed = 0
        self.snapshots_received = 0
        self.snapshot_chunks_in_flight_max = 0

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def snapshot(self) -> TransportStats:
        values = {name: getattr(self, name) for name in self.__slots__ if name != "refused"}
        return TransportStats(refused=MappingProxyType(dict(self.refused)), **values)
