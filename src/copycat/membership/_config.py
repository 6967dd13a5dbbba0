# Configuration of one node's membership: `MembershipConfig`.
#
# What lives here: frozen data, one documented knob per field, validated at construction
# (`ConfigError(field, message)` names the field and the rule broken), plus the size
# limits that keep the node metadata inside kinship's 512 bytes.
#
# What must not: kinship imports, sockets, asyncio, or any mutable state. The translation
# to kinship's own config lives in `_gossip.py`.
"""Settings of a node's membership: gossip endpoint, peers, keys, identity and tuning."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Final, Literal

from copycat._net import is_loopback
from copycat.errors import ConfigError

Preset = Literal["local", "lan", "wan"]
"""Timing preset of the gossip protocol (kinship's presets): `local` probes every 200 ms and
binds loopback only, `lan` probes every second, `wan` every five seconds."""

PRESETS: Final = ("local", "lan", "wan")

MAX_LABEL_BYTES: Final = 64
"""Longest data center, rack or node name, in UTF-8 bytes (the metadata must fit 512
bytes)."""

MAX_ADDRESS_BYTES: Final = 200
"""Longest transport address ("host:port"), in UTF-8 bytes."""

MAX_CLUSTER_NAME_BYTES: Final = 64
"""Longest cluster name, in UTF-8 bytes."""

MAX_NODE_ID: Final = (1 << 63) - 1
"""Node ids are positive and fit a signed 64-bit integer (the raft layer's rule)."""

MAX_USER_MESSAGE_BYTES: Final = 64 * 1024
"""kinship's largest direct message; every directory sync message must fit it."""


def _utf8_len(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def _check_label(field: str, value: object, limit: int) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(field, "must be a non-empty string")
    if _utf8_len(value) > limit:
        raise ConfigError(field, f"must be at most {limit} UTF-8 bytes")
    if any(not ch.isprintable() for ch in value):
        raise ConfigError(field, "must hold printable characters only")


def _split_host_port(field: str, value: object) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(field, f"{value!r} is not 'host:port'")
    host, _, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(field, f"{value!r} is not 'host:port' with a port from 1 to 65535")
    return host, int(port_text)


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipConfig:
    """Settings of one node's membership. The defaults work on one machine (loopback, the
    `local` preset, no keys); every duration is in seconds and every size in bytes."""

    node_id: int
    """This node's id: a positive integer below 2**63, never reused for another node and
    never an address. Required. The gossip name is derived from it (`n<id>`), so two
    processes with the same id conflict and the newer is ignored by the cluster."""

    gossip_host: str = "127.0.0.1"
    """Address the gossip endpoint binds (UDP and TCP): an IP address, or a wildcard
    ("0.0.0.0", "::") to listen on every interface. Default loopback. It is also the
    address published unless `gossip_advertise` is set. Off loopback (see
    `gossip_advertise` for the rule) gossip needs `encryption_keys` and the `lan` or
    `wan` preset."""

    gossip_port: int = 7459
    """Port of the gossip endpoint, 0 to 65535. Default 7459. 0 lets the OS pick (read it
    back from `Membership.gossip_address`); a node that restarts should keep its port, or
    its old run's record holds its name at the old address until it expires."""

    gossip_advertise: str | None = None
    """The gossip address published to the other nodes ("host:port", IPv6 in brackets),
    when it is not the bound `gossip_host:gossip_port`: behind NAT or a port mapping, in
    a container, or with a wildcard bind. Default None: publish the bound address (with
    the port the OS picked when `gossip_port` is 0). kinship takes an IP address here and
    publishes the port as given, before it binds, so the port is 1 to 65535 (never the
    OS's pick) and must lead, through whatever forwards it, to the bound port. This is
    the address `Membership.gossip_address` reports and other nodes list in
    `peers_to_contact`; listed in this node's own `peers_to_contact`, it is skipped as
    this node. At most 200 UTF-8 bytes.

    The loopback rule of `preset` and `encryption_keys` judges both addresses: gossip is
    on loopback when `gossip_host` is loopback and so is this one when set. The bind says
    who can send to the node (a wildcard is not loopback); the published address says
    where its peers are."""

    peers_to_contact: tuple[str, ...] = ()
    """Gossip addresses ("host:port") of nodes already in the cluster. Default (): this
    node starts a new cluster. Listing every node, this one included, is fine: an
    unreachable peer or this node itself is skipped, and a node that reaches none keeps
    retrying in the background."""

    cluster_name: str = "copycat"
    """Label of the cluster, 1 to 64 UTF-8 bytes. Default "copycat". Packets are bound to
    it, so two clusters sharing a network never mix."""

    encryption_keys: tuple[str | bytes, ...] = ()
    """Gossip keys: 32 bytes each, as bytes or base64 text (`python -m kinship keygen`).
    The first encrypts, every one decrypts. Default (): plaintext, allowed only with the
    `local` preset on loopback. Rotate at run time with `Membership.install_key`,
    `use_key` and `remove_key`, each step on every node before the next."""

    preset: Preset = "local"
    """Gossip timing: "local" (probe every 0.2 s, loopback only: tests and one machine),
    "lan" (probe every 1 s: one data center), "wan" (probe every 5 s, slower suspicion:
    regions, flaky links). Default "local". Faster detection costs more packets and more
    false suspicion on a loaded host."""

    transport_address: str = "127.0.0.1:7458"
    """This node's CopyCat transport address ("host:port"), published in the node metadata
    so any node can find it from the node id. At most 200 UTF-8 bytes. Default
    "127.0.0.1:7458"."""

    data_center: str = "default"
    """Data center of this node, 1 to 64 printable UTF-8 bytes, for placement. Default
    "default"."""

    rack: str = "default"
    """Rack of this node within its data center, 1 to 64 printable UTF-8 bytes, for
    placement. Default "default"."""

    node_name: str | None = None
    """The name other nodes show for this one in logs and status, 1 to 64 printable
    UTF-8 bytes. Default None: the transport address. Only for people: ids, not names,
    identify nodes."""

    sync_timeout_s: float = 1.0
    """How long a directory pull waits for the next response chunk before it retries.
    Default 1 s (kinship messages are best effort; on loopback a response takes well under
    10 ms). Shorter repairs a lost message sooner at the cost of duplicate responses from
    a slow peer. Greater than 0."""

    sync_max_retries: int = 4
    """Retries of one directory pull after a timeout, each waiting twice as long as the
    last. Default 4. When they run out the pull is abandoned until the next change of the
    peer's metadata or the next anti-entropy round. 0 to 20."""

    reconnect_interval_s: float = 30.0
    """How often the node joins again those of `peers_to_contact` it does not see live,
    so that two halves of a cluster that started apart (every node restarted during a
    partition) merge once the network heals. Default 30 s: one push-pull exchange per
    peer per round. Greater than 0."""
    anti_entropy_interval_s: float = 10.0
    """Period of the anti-entropy check: every held peer directory is re-hashed and
    compared with the digest the peer advertises, and pulled in full if they differ.
    Default 10 s. Shorter repairs a silent divergence sooner at the cost of CPU (a hash
    per held entry per round). Greater than 0."""

    max_history_changes: int = 65_536
    """Entry changes this node keeps in its directory change log, to serve deltas. A peer
    that is further behind gets a full snapshot instead. Default 65,536 (a few MiB).
    Larger serves deltas to peers that were away longer at the cost of memory."""

    max_chunk_bytes: int = 60_000
    """Largest directory sync message, in bytes, below kinship's 64 KiB message limit.
    Default 60,000. Smaller messages fit fewer entries each (more messages per snapshot).
    From 4,096 to 65,536."""

    max_entries_per_node: int = 1_000_000
    """Most directory entries accepted from one peer; a larger snapshot or delta is
    refused and counted. Default 1,000,000. Bounds the memory a peer can cost this node."""

    max_concurrent_syncs: int = 8
    """Directory pulls this node runs at once, and requests it serves at once (requests
    beyond are dropped and retried by their sender). Default 8."""

    meta_flush_interval_s: float = 0.05
    """Least time between two metadata updates after directory changes; changes inside it
    are coalesced into one update. Default 0.05 s. Longer saves gossip bandwidth at the
    cost of directory latency."""

    event_buffer: int = 4096
    """Events buffered per subscriber of `Membership.events()`. A subscriber that falls
    further behind loses the oldest and reads `EventsLost(count)`. Default 4,096."""

    leave_timeout_s: float = 2.0
    """How long `close()` waits for this node's leave to spread. Default 2 s."""

    insecure_plaintext: bool = False
    """Run gossip without encryption off loopback. Default False. Anyone who can reach the
    port can then forge membership: use only where everything that can reach it is
    trusted."""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.node_id, int)
            or isinstance(self.node_id, bool)
            or not 0 < self.node_id <= MAX_NODE_ID
        ):
            raise ConfigError("node_id", "must be an integer from 1 to 2**63 - 1")
        if not isinstance(self.gossip_host, str) or not self.gossip_host:
            raise ConfigError("gossip_host", "must be a non-empty host name or IP address")
        if (
            not isinstance(self.gossip_port, int)
            or isinstance(self.gossip_port, bool)
            or not 0 <= self.gossip_port <= 65535
        ):
            raise ConfigError("gossip_port", "must be an integer from 0 to 65535")
        if self.gossip_advertise is not None:
            self._check_advertise()
        if isinstance(self.peers_to_contact, str) or not isinstance(self.peers_to_contact, tuple):
            raise ConfigError("peers_to_contact", "must be a tuple of 'host:port' strings")
        for peer in self.peers_to_contact:
            _split_host_port("peers_to_contact", peer)
        _check_label("cluster_name", self.cluster_name, MAX_CLUSTER_NAME_BYTES)
        if not isinstance(self.encryption_keys, tuple) or not all(
            isinstance(key, str | bytes) and key for key in self.encryption_keys
        ):
            raise ConfigError("encryption_keys", "must be a tuple of keys (bytes or base64 text)")
        if self.preset not in PRESETS:
            raise ConfigError("preset", f"must be one of {', '.join(PRESETS)}")
        if self.preset == "local" and not self._on_loopback:
            raise ConfigError(
                "preset",
                "'local' runs on loopback only (gossip_host, and gossip_advertise when set); "
                "use 'lan' or 'wan'",
            )
        if not self.encryption_keys and not self.insecure_plaintext and self.preset != "local":
            raise ConfigError(
                "encryption_keys",
                "keys are required with the 'lan' and 'wan' presets "
                "(or set insecure_plaintext, trusted networks only)",
            )
        _split_host_port("transport_address", self.transport_address)
        _check_label("transport_address", self.transport_address, MAX_ADDRESS_BYTES)
        _check_label("data_center", self.data_center, MAX_LABEL_BYTES)
        _check_label("rack", self.rack, MAX_LABEL_BYTES)
        if self.node_name is not None:
            _check_label("node_name", self.node_name, MAX_LABEL_BYTES)
        for name in (
            "sync_timeout_s",
            "anti_entropy_interval_s",
            "reconnect_interval_s",
            "meta_flush_interval_s",
            "leave_timeout_s",
        ):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(name, "must be a finite number of seconds above 0")
        self._check_int("sync_max_retries", 0, 20)
        self._check_int("max_history_changes", 0, 1 << 32)
        self._check_int("max_chunk_bytes", 4096, MAX_USER_MESSAGE_BYTES)
        self._check_int("max_entries_per_node", 1, 1 << 32)
        self._check_int("max_concurrent_syncs", 1, 1024)
        self._check_int("event_buffer", 1, 1 << 24)

    def _check_advertise(self) -> None:
        if not isinstance(self.gossip_advertise, str):
            raise ConfigError("gossip_advertise", "must be None or 'host:port'")
        host, _ = _split_host_port("gossip_advertise", self.gossip_advertise)
        _check_label("gossip_advertise", self.gossip_advertise, MAX_ADDRESS_BYTES)
        try:
            wildcard = ipaddress.ip_address(host).is_unspecified
        except ValueError:
            wildcard = False
        if wildcard:
            raise ConfigError(
                "gossip_advertise",
                f"{self.gossip_advertise!r} is a wildcard address, which other nodes cannot "
                "dial; publish the address this node is reachable at",
            )

    @property
    def _on_loopback(self) -> bool:
        """Whether gossip runs on loopback only: `gossip_host` is a loopback address, and
        so is `gossip_advertise` when set (the rule of `preset` and `encryption_keys`)."""
        if not is_loopback(self.gossip_host):
            return False
        if self.gossip_advertise is None:
            return True
        host, _ = _split_host_port("gossip_advertise", self.gossip_advertise)
        return is_loopback(host)

    def _check_int(self, name: str, low: int, high: int) -> None:
        value = getattr(self, name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(name, f"must be an integer from {low} to {high}")

    @property
    def gossip_name(self) -> str:
        """The name this node has in the gossip layer: `n<node_id>`."""
        return gossip_name(self.node_id)


def gossip_name(node_id: int) -> str:
    """The gossip-layer name of node `node_id`."""
    return f"n{node_id}"
