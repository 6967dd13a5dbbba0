"""Configuration of a transport endpoint: `TransportConfig` and `TLSConfig`.

What lives here: frozen data with one documented knob per field, validated at
construction (`ConfigError(field, message)` names the field and the rule broken).

What must not: sockets, ssl contexts, files being opened (the endpoint builds its
ssl context from these paths when it starts), or any mutable state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from copycat.errors import ConfigError

KIB: Final = 1 << 10
MIB: Final = 1 << 20

COMPRESSION_CODECS: Final = ("zstd", "lz4")
"""Codec names the wire format knows (docs/wire.md, "Compression")."""

MIN_FRAME_BYTES: Final = 64 * KIB
"""No `max_frame_bytes` below this: handshakes, requests and snapshot metadata must fit."""

MAX_FRAME_BYTES_LIMIT: Final = (1 << 31) - 1
"""The frame length field is 32 bits; larger frames could not be described."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    """Mutual TLS material, as PEM file paths. Both sides present a certificate signed
    by the cluster CA and both verify the other's; a peer whose certificate the CA did
    not sign is refused during the TLS handshake."""

    ca_file: str
    """PEM file of the cluster CA (one or more certificates) that signs every node's
    certificate. Required."""

    cert_file: str
    """PEM file of this node's certificate (chain), signed by `ca_file`. Required."""

    key_file: str
    """PEM file of the private key of `cert_file`, unencrypted. Required."""

    check_hostname: bool = False
    """Whether a dialing node also checks that the peer certificate names the host it
    dialed. Default False: any certificate the cluster CA signed identifies a cluster
    member, and nodes are often dialed by IP address. True adds protection against a
    stolen-but-valid node certificate used from another host, at the cost of issuing
    certificates whose SAN lists every address the node is dialed by."""

    bind_node_id: bool = False
    """Whether a peer's certificate must name the node id it claims in the handshake:
    its subject common name must be `node-<id>` (what `copycat.transport` dev
    certificates carry). Default False (any certificate the CA signed may claim any id).
    True means a node holding one node's key cannot pose as another node; it is checked
    by both sides, and a mismatch is refused with reason `certificate`."""

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file"):
            if not getattr(self, name):
                raise ConfigError(f"tls.{name}", "must name a PEM file")


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    """Settings of one node's transport endpoint. The defaults work on one machine;
    every size is in bytes and every duration in seconds."""

    node_id: int
    """This node's id: a positive integer, never reused for another node and never an
    address. Required. Sent in the handshake; a peer dialed as node N that answers as
    another id is refused."""

    cluster_name: str = "copycat"
    """Name of the cluster, 1 to 128 characters. Default "copycat". A peer with another
    name is refused at the handshake, so two clusters sharing a network never mix."""

    host: str = "127.0.0.1"
    """Address to listen on. Default loopback. Binding to any other address without
    `tls` logs a warning: plain TCP is meant for development only."""

    port: int = 0
    """TCP port to listen on, 0 to 65535. Default 0: an ephemeral port chosen by the OS
    (read it back from `Endpoint.address`)."""

    tls: TLSConfig | None = None
    """Mutual TLS material. Default None: plain TCP. Costs CPU per byte
    (see benchmarks/transport.py) and buys authentication and confidentiality."""

    max_frame_bytes: int = 16 * MIB
    """Largest frame payload accepted or sent, checked before any allocation. Default
    16 MiB. Must exceed raft's `max_msg_bytes` plus framing and `snapshot_chunk_bytes`;
    larger lets bigger append batches through at the cost of the memory a peer can make
    this node allocate per connection. From 64 KiB to 2 GiB - 1."""

    compression: tuple[str, ...] = ()
    """Codecs this node offers and accepts, in order of preference: any of "zstd" and
    "lz4" (each needs its package installed). Default (): no compression. The dialing
    side offers its list, the accepting side picks its first codec that both have.
    Compression saves WAN bandwidth at the cost of CPU on both ends; lz4 is cheaper,
    zstd compresses more."""

    compression_min_bytes: int = 4 * KIB
    """Frames whose payload is smaller than this are sent uncompressed. Default 4 KiB.
    Lower saves more bandwidth at the cost of CPU spent on frames that barely shrink."""

    compression_level: int = 3
    """zstd level, 1 to 19 (lz4 ignores it). Default 3. Higher compresses more at the
    cost of sender CPU; the receiver's cost barely changes."""

    send_queue_max_msgs: int = 65_536
    """Raft messages queued for one peer (not yet handed to the socket) before new ones
    are dropped. Default 65,536. On overflow the message is dropped and the peer is
    reported unreachable for its group (the host then calls raft's
    `report_unreachable`, and raft retransmits later). Larger rides out longer stalls
    at the cost of memory and of staler messages."""

    send_queue_max_bytes: int = 64 * MIB
    """Encoded bytes queued for one peer before new messages are dropped (same policy
    as `send_queue_max_msgs`). Default 64 MiB, at least 64 KiB. Bounds the memory a
    stalled peer can cost this node; larger rides out longer stalls of a fast sender."""

    write_buffer_high_bytes: int = 4 * MIB
    """Bytes the socket's write buffer may hold before the endpoint stops handing it
    frames (the queue above fills instead). Default 4 MiB. Larger keeps a fast link
    busier at the cost of memory per peer. At least 64 KiB."""

    connect_timeout_s: float = 5.0
    """Time allowed to open a TCP connection (and TLS handshake) to a peer. Default 5 s."""

    handshake_timeout_s: float = 5.0
    """Time allowed for the whole CopyCat handshake after the connection opens, on both
    sides. Default 5 s. A peer that trickles bytes (slowloris) is cut off after it.
    Shorter frees sockets from silent peers sooner; too short refuses peers across a
    slow WAN link."""

    frame_timeout_s: float = 30.0
    """Time allowed between the first and the last byte of one frame. Default 30 s. A
    16 MiB frame needs about 0.6 MB/s to arrive in time; a trickling peer is cut off."""

    idle_timeout_s: float = 30.0
    """A connection on which nothing arrives for this long is closed (the peer sends a
    keepalive every `keepalive_interval_s`). Default 30 s. Shorter detects dead peers
    sooner at the cost of closing links across long pauses (GC, suspended VM)."""

    keepalive_interval_s: float = 5.0
    """A connection idle on the sending side for this long carries a tiny keepalive
    frame. Default 5 s. Must be less than idle_timeout_s / 2."""

    reconnect_initial_s: float = 0.05
    """First delay before redialing a peer after a failure; it doubles on each failure
    up to `reconnect_max_s`. Default 0.05 s."""

    reconnect_max_s: float = 5.0
    """Longest delay between redials. Default 5 s. Shorter reconnects sooner after an
    outage at the cost of more dials at a dead peer."""

    reconnect_jitter: float = 0.5
    """Fraction, 0 to 1, of each backoff delay drawn at random (full jitter when 1), so
    nodes do not redial in lockstep. Default 0.5."""

    request_timeout_s: float = 10.0
    """Default time a `request()` waits for its response. Default 10 s."""

    max_inflight_requests: int = 128
    """Requests from one peer served at the same time; more are answered at once with
    the remote error "overloaded". Default 128."""

    snapshot_chunk_bytes: int = 128 * KIB
    """Bytes per snapshot chunk frame. Default 128 KiB. Other groups' messages share the
    connection and may wait behind a chunk on the wire (about 0.1 s at 10 Mbit/s), so
    smaller interleaves them more finely at the cost of per-chunk overhead. Must fit a
    frame."""

    snapshot_window_chunks: int = 128
    """Chunks a snapshot sender may have unacknowledged (credits the receiver grants).
    Default 128 (16 MiB with the default chunk): enough for 1 Gbit/s at 130 ms RTT. The
    sender keeps fewer in flight when the link is slower (`snapshot_queue_target_s`);
    the receiver's memory per stream is at most window x chunk bytes."""

    snapshot_queue_target_s: float = 0.025
    """Queueing delay a snapshot stream may add on its path: the sender grows the chunks
    it keeps in flight while the time a chunk takes to be acknowledged stays within this
    (or a quarter of the path's own time, if more) of the least seen, and shrinks them
    beyond. Default 25 ms, LEDBAT's target. Lower keeps other groups' heartbeats and
    appends quicker during a transfer; higher may fill a jittery link better."""

    snapshot_timeout_s: float = 60.0
    """A snapshot stream with no progress (no chunk, credit or result) for this long
    fails on both sides. Default 60 s."""

    max_inbound_snapshots: int = 4
    """Snapshot streams this node receives at the same time; more are refused and the
    sender reports the snapshot as failed (raft retries it later). Default 4."""

    max_pending_handshakes: int = 64
    """Inbound connections that may be in their handshake at the same time; more are
    closed at once and counted. Default 64. Bounds what half-open hostile connections
    can cost."""

    hostile_log_interval_s: float = 60.0
    """Refused input is logged at most once per peer host (its address less the port: a
    client that reconnects comes from a new one) and reason per interval (every
    refusal is still counted). Default 60 s."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the first field that breaks its rule."""
        if isinstance(self.node_id, bool) or not isinstance(self.node_id, int):
            raise ConfigError("node_id", "must be an integer")
        if not 0 < self.node_id < 1 << 64:
            raise ConfigError("node_id", f"must be in 1..2**64-1, got {self.node_id}")
        if not 1 <= len(self.cluster_name) <= 128:
            raise ConfigError("cluster_name", "must be 1 to 128 characters")
        if not self.host:
            raise ConfigError("host", "must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", f"must be in 0..65535, got {self.port}")
        if not MIN_FRAME_BYTES <= self.max_frame_bytes <= MAX_FRAME_BYTES_LIMIT:
            raise ConfigError(
                "max_frame_bytes",
                f"must be in {MIN_FRAME_BYTES}..{MAX_FRAME_BYTES_LIMIT}, got {self.max_frame_bytes}",
            )
        for codec in self.compression:
            if codec not in COMPRESSION_CODECS:
                raise ConfigError(
                    "compression", f"unknown codec {codec!r}; known: {COMPRESSION_CODECS}"
                )
        if len(set(self.compression)) != len(self.compression):
            raise ConfigError("compression", "lists a codec twice")
        if self.compression_min_bytes < 0:
            raise ConfigError("compression_min_bytes", "must not be negative")
        if not 1 <= self.compression_level <= 19:
            raise ConfigError("compression_level", "must be in 1..19")
        if self.send_queue_max_msgs < 1:
            raise ConfigError("send_queue_max_msgs", "must be at least 1")
        for name in ("send_queue_max_bytes", "write_buffer_high_bytes"):
            if getattr(self, name) < 64 * KIB:
                raise ConfigError(name, "must be at least 64 KiB")
        for name in (
            "connect_timeout_s",
            "handshake_timeout_s",
            "frame_timeout_s",
            "idle_timeout_s",
            "keepalive_interval_s",
            "reconnect_initial_s",
            "reconnect_max_s",
            "request_timeout_s",
            "snapshot_timeout_s",
            "snapshot_queue_target_s",
            "hostile_log_interval_s",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(name, f"must be a positive finite number, got {value!r}")
        if self.keepalive_interval_s * 2 >= self.idle_timeout_s:
            raise ConfigError(
                "keepalive_interval_s",
                f"must be less than idle_timeout_s / 2 ({self.idle_timeout_s / 2}), "
                f"got {self.keepalive_interval_s}",
            )
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ConfigError("reconnect_max_s", "must be at least reconnect_initial_s")
        if not 0.0 <= self.reconnect_jitter <= 1.0:
            raise ConfigError("reconnect_jitter", "must be in 0..1")
        if self.max_inflight_requests < 1:
            raise ConfigError("max_inflight_requests", "must be at least 1")
        if not 1 <= self.snapshot_chunk_bytes <= self.max_frame_bytes - 4 * KIB:
            raise ConfigError(
                "snapshot_chunk_bytes", "must be positive and at least 4 KiB below max_frame_bytes"
            )
        if self.snapshot_window_chunks < 1:
            raise ConfigError("snapshot_window_chunks", "must be at least 1")
        if self.max_inbound_snapshots < 0:
            raise ConfigError("max_inbound_snapshots", "must not be negative")
        if self.max_pending_handshakes < 1:
            raise ConfigError("max_pending_handshakes", "must be at least 1")
