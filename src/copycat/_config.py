# The node's configuration: `Config`, its presets and the sub-configs it builds.
#
# What lives here: frozen data with one documented knob per field (memberlist config.go
# style: meaning, unit, default, trade-off, constraints), validated at construction
# (`ConfigError(field, message)` names the field and the rule broken); the presets
# `default()`, `local()`, `lan()` and `wan()`, written as diffs from the default with a
# reason per value; `from_env()`; and the translation into the layers' own configs
# (`TransportConfig`, `MembershipConfig`, `HostConfig`) and the log store.
#
# What must not: sockets, threads, asyncio, or files being read or written at
# construction (`open_log_store()` is the one method that touches the disk, and only
# when called). The node, not this module, generates and persists a missing node id.
"""Settings of a CopyCat node: identity, addresses, peers, security and tuning."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TypedDict, Unpack, cast

from copycat._net import is_loopback
from copycat.errors import ConfigError

if TYPE_CHECKING:
    from copycat.host import HostConfig
    from copycat.membership import MembershipConfig
    from copycat.storage import LogStore
    from copycat.transport import TransportConfig

__all__: Final = ["Config", "GossipPreset"]

GossipPreset = Literal["local", "lan", "wan"]
"""Timing preset of the gossip layer: "local" (loopback only), "lan" or "wan"."""

GOSSIP_PRESETS: Final = ("local", "lan", "wan")

COMPRESSION_CODECS: Final = ("zstd", "lz4")
"""Codec names the transport knows (the transport's own list; kept equal by a test)."""

MAX_NODE_ID: Final = (1 << 63) - 1
"""Node ids fit a signed 64-bit integer: the tightest bound among the layers (membership
and raft); the transport and the host allow up to 2**64 - 1."""

MAX_LABEL_BYTES: Final = 64
"""Longest cluster name, data center or rack, in UTF-8 bytes (gossip metadata is 512 bytes)."""

MAX_HOSTNAME_CHARS: Final = 190
"""Longest hostname: "[host]:port" must fit the 200 bytes membership allows an address."""

GOSSIP_KEY_BYTES: Final = 32
"""Length of a gossip key once decoded (AES-256-GCM)."""

NODE_ID_FILE: Final = "node_id"
"""Name of the file under `data_dir` where a node keeps its generated id."""

LOG_STORE_DIR: Final = "raft"
"""Name of the directory under `data_dir` that holds the log store."""

_HOSTNAME_RE: Final = re.compile(
    r"^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


class _ConfigKwargs(TypedDict, total=False):
    """Every `Config` field as an optional keyword: the type of the presets' overrides.
    A test keeps its keys equal to the dataclass fields."""

    hostname: str
    port: int
    gossip_port: int
    bind_host: str | None
    advertise_port: int | None
    advertise_gossip_port: int | None
    data_dir: str
    peers_to_contact: Sequence[str]
    data_center: str
    rack: str
    node_name: str | None
    cluster_name: str
    node_id: int | None
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_bind_node_id: bool
    gossip_keys: Sequence[str]
    insecure_plaintext_gossip: bool
    durable: bool
    tick_interval_s: float
    election_ticks: int
    snapshot_every_entries: int
    snapshot_keep_entries: int
    proposal_timeout_s: float
    replicas: int
    repair_grace_s: float
    gossip_preset: GossipPreset
    compression: Sequence[str]
    leader_follows_writers: bool
    leader_follow_after_s: float
    http_port: int | None
    log_format: Literal["text", "json"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Settings of one CopyCat node. The defaults run one node on one machine: loopback,
    ports 7458 and 7459, data under ./copy-cat-db, no TLS, no gossip keys.

    Every duration is in seconds. Invalid values raise `ConfigError` at construction,
    naming the field and the rule. Sequences (`peers_to_contact`, `gossip_keys`,
    `compression`) may be given as lists; they are stored as tuples, so a `Config` is
    hashable. `gossip_keys` are left out of `repr()`.

    Presets: `Config.default()`, `Config.local()` (tests and demos on one machine),
    `Config.lan()` (one data center) and `Config.wan()` (several regions), each taking
    overrides as keywords. `Config.from_env()` reads `COPYCAT_*` variables.
    """

    # -- identity and addresses ---------------------------------------------------------

    hostname: str = "127.0.0.1"
    """The address other nodes reach this node at: what it publishes, for both the CopyCat
    transport (in its gossip metadata) and gossip (its gossip address, the one others list
    in `peers_to_contact`). It is also the address both listen on, unless `bind_host` is
    set. An IP address (IPv6 without brackets) or a DNS name; the gossip layer (kinship)
    takes IP addresses only, so give an IP address for a node that runs gossip. Default
    "127.0.0.1": one machine only. Must not be a wildcard address ("0.0.0.0", "::"),
    since other nodes dial it: bind a wildcard with `bind_host` instead. At most 190
    characters."""

    port: int = 7458
    """TCP port of the CopyCat transport (raft messages, snapshots, control requests),
    0 to 65535. Default 7458. 0 lets the OS pick a free port (the node publishes the port
    it got): convenient for tests, but a node that restarts should keep its port. Must
    differ from `gossip_port` unless both are 0."""

    gossip_port: int = 7459
    """UDP and TCP port of the gossip endpoint (membership and the directory), 0 to 65535.
    Default 7459. 0 lets the OS pick; other nodes then need the port it got in their
    `peers_to_contact`, and a node that restarts should keep its port (its old record
    holds its name at the old address until it expires)."""

    bind_host: str | None = None
    """The address both the transport (TCP `port`) and gossip (UDP and TCP `gossip_port`)
    listen on, when it is not the published `hostname`: behind NAT, in a container or a
    Kubernetes pod, where the address peers dial is not one this machine holds, or to
    listen on every interface. An IP address (IPv6 without brackets), a DNS name, or a
    wildcard ("0.0.0.0": every IPv4 interface, "::": every interface), unlike `hostname`;
    kinship binds IP addresses only. Default None: bind `hostname`. Whatever sits between
    (NAT, a port mapping, a proxy) must carry traffic for `hostname` and the published
    ports to this address and the bound ports. A wider bind accepts traffic from more
    networks: the loopback rule of `gossip_preset` and `gossip_keys` judges this address
    as well as `hostname` (a wildcard is not loopback), and the transport warns when it
    listens off loopback without TLS. At most 190 characters."""

    advertise_port: int | None = None
    """The transport port published to other nodes, 1 to 65535, when it is not the port
    bound: a NAT or container port mapping, or a proxy in front of the node, forwards it
    to `port`. Default None: publish the port the transport bound (`port`, or the one the
    OS picked when `port` is 0). A wrong value leaves the node alive in gossip but
    unreachable for raft, so its groups lose that replica until it is fixed."""

    advertise_gossip_port: int | None = None
    """The gossip port published to other nodes (the one they list in
    `peers_to_contact`), 1 to 65535, when it is not the port bound: a mapping or proxy
    forwards it, UDP and TCP, to `gossip_port`. Default None: publish the bound gossip
    port. kinship publishes its address before it binds, so it cannot publish a port the
    OS picks: with `bind_host` set to another address than `hostname` (gossip then
    publishes `hostname` apart from its bind), `gossip_port` 0 needs this field set, or a
    `ConfigError` says so. Must differ from the published transport port."""

    data_dir: str = "./copy-cat-db"
    """Directory of this node's durable state: the log store (raft logs, hard state,
    snapshots) in `raft/` and the `node_id` file. Default "./copy-cat-db" (created when missing).
    One directory per node: two nodes sharing one are refused by the store's lock. A
    path-like object is accepted and stored as a string."""

    peers_to_contact: Sequence[str] = ()
    """Gossip addresses ("host:port", IPv6 as "[::1]:7459") of nodes already in the
    cluster. Default (): this node starts a new cluster. One reachable peer is enough;
    listing every node, this one included, is fine (unreachable peers and this node are
    skipped, and a node that reaches none keeps retrying). Stored as a tuple."""

    data_center: str = "dc1"
    """Data center of this node, 1 to 64 printable UTF-8 bytes. Default "dc1". Placement
    spreads a data structure's replicas over data centers first, then racks, so name them
    after real failure domains."""

    rack: str = "rack1"
    """Rack of this node within its data center, 1 to 64 printable UTF-8 bytes. Default
    "rack1". Placement spreads replicas within a data center over racks."""

    node_name: str | None = None
    """This node's name for people, 1 to 64 printable UTF-8 bytes: it starts every log
    line of the node, and other nodes show it in their status and logs (it travels in the
    gossip metadata). Default None: the transport address published ("host:port"). Only
    a label: the node id, not the name, identifies the node, so two nodes may share one."""

    cluster_name: str = "copycat"
    """Name of the cluster, 1 to 64 printable UTF-8 bytes. Default "copycat". Nodes with
    another name are refused at the transport handshake and by gossip, so two clusters
    sharing a network never mix."""

    node_id: int | None = None
    """This node's id in every raft group: an integer from 1 to 2**63 - 1, never reused
    for another node and never an address. Default None: the node generates a random id
    on its first start, writes it to `<data_dir>/node_id` (see `node_id_file`) and reads
    it back on every later start, so the id follows the data. Set it explicitly only
    when you manage ids yourself; it must then match the id file if one exists."""

    # -- security -----------------------------------------------------------------------

    tls_ca_file: str | None = None
    """PEM file of the cluster CA that signs every node's certificate. Default None (with
    the two below): the transport runs plain TCP, fit for loopback and trusted networks
    only. The three TLS files are given all together or not at all; with them, every
    transport connection is mutual TLS and a peer the CA did not sign is refused. Files
    are read when the node starts, not here."""

    tls_cert_file: str | None = None
    """PEM file of this node's certificate (chain), signed by `tls_ca_file`. Default None.
    Given together with `tls_ca_file` and `tls_key_file`."""

    tls_key_file: str | None = None
    """PEM file of the unencrypted private key of `tls_cert_file`. Default None. Given
    together with `tls_ca_file` and `tls_cert_file`."""

    tls_bind_node_id: bool = False
    """With TLS: whether a peer's certificate must name the node id it claims, as the
    subject common name `node-<id>`. Default False (any certificate the cluster CA signed
    may claim any node id). True means one node's stolen key cannot pose as another node;
    issue each node's certificate with its id then."""

    gossip_keys: Sequence[str] = field(default=(), repr=False)
    """Gossip encryption keys: base64 text of 32 random bytes each (make one with
    `python -m kinship keygen`). The first encrypts, every one decrypts, which is how
    keys rotate. Default (): gossip in plaintext, allowed only on loopback (`hostname`
    and `bind_host` both loopback; see `gossip_preset`) with the "local" preset. Required
    otherwise, unless `insecure_plaintext_gossip` is set. Every node of a cluster needs
    the same keys. Hidden from `repr()`."""

    insecure_plaintext_gossip: bool = False
    """Allow gossip without `gossip_keys` off loopback or with the "lan" or "wan" preset.
    Default False. Anyone who can reach the gossip port can then forge membership: set it
    only where everything that can reach the port is trusted."""

    # -- tuning -------------------------------------------------------------------------

    durable: bool = True
    """Whether every storage write is fsynced before it is acknowledged. Default True:
    nothing acknowledged is lost while a majority of a group keeps its disks. False is
    several times faster at the cost of losing the latest writes when the machine (not
    just the process) crashes: fit for tests and throwaway data."""

    tick_interval_s: float = 0.1
    """Seconds per raft tick, the clock of elections and heartbeats (a leader heartbeats
    every tick). Default 0.1 s. With `election_ticks` = 10 a dead leader is replaced
    after 1 to 2 s. Shorter ticks fail over faster at the cost of CPU per awake group and
    more spurious elections when the network round trip nears the tick. Keep it above the
    round trip between nodes. Positive and finite."""

    election_ticks: int = 10
    """Ticks a follower waits without hearing a leader before it campaigns (randomized
    between this and twice this). Default 10. Failover takes about `election_ticks` x
    `tick_interval_s`; more ticks ride out longer pauses (GC, a loaded host) at the cost
    of slower failover. From 2 to 10,000."""

    snapshot_every_entries: int = 10_000
    """A subscriber's member asks its snapshot provider for a snapshot after this many
    entries since the last one, stores it, compacts the log and ships it to the detached
    replicas. Default 10,000. Smaller bounds the log on disk and the catch-up time of a
    lagging or new member, at the cost of more snapshot work (each one serializes the
    whole data structure). At least 1."""

    snapshot_keep_entries: int = 1_000
    """Entries kept below a snapshot when the log is compacted, so that a member that lags
    a little catches up from the log rather than a whole snapshot. Default 1,000. More
    keeps catch-up cheap at the cost of disk. At least 0."""

    proposal_timeout_s: float = 30.0
    """How long `propose` waits for its proposal to commit before it raises
    `ProposalTimeoutError` (outcome unknown: the proposal may still commit, once). Default
    30 s. Until then the proposal is retried across leader changes with the same
    session and sequence, so it never applies twice. Must be at least twice the election
    timeout (2 x `election_ticks` x `tick_interval_s`), so one failover never fails a
    proposal."""

    replicas: int = 3
    """Replicas (raft voters) `allocate_data_structure` places when no count is given.
    Default 3: one replica may fail without loss of availability. 5 survives two failures
    at the cost of one more network round trip to a quorum on every commit; even counts
    add cost without adding fault tolerance. At least 1. A single-node cluster places as
    many as it can and tops up as nodes join."""

    repair_grace_s: float = 300.0
    """Seconds a voter must stay gone before the groups it served get a replacement
    replica from placement: gossip must report its node failed, and the group's leader
    must have heard no raft message from it, for that long each (and a replacement must
    exist: a failure alone never shrinks a group). Default 300 s, as CockroachDB waits 5
    minutes before it calls a store dead: a partition, a restart or a long pause does
    not move data. Shorter restores redundancy sooner at the cost of needless copies
    (and load) when a node only blinked. `Config.local()` uses 10 s. Positive."""

    gossip_preset: GossipPreset = "local"
    """Timing of failure detection: "local" (probe every 0.2 s; loopback only: tests, one
    machine), "lan" (probe every 1 s: one data center), "wan" (probe every 5 s with slower
    suspicion: regions and flaky links). Default "local". Faster detection costs packets
    and more false suspicion on a loaded host. "lan" and "wan" need `gossip_keys` (or
    `insecure_plaintext_gossip`).

    The loopback rule, here and for `gossip_keys`: a node is on loopback when both the
    address it publishes (`hostname`) and the address it listens on (`bind_host`, when
    set) are loopback addresses ("localhost", 127.0.0.0/8, ::1). The bind says who can
    send to the node (a wildcard "0.0.0.0" or "::" takes packets from every network, so
    it is not loopback); the published address says where its peers are (a node that
    publishes another address is reached from elsewhere, through whatever forwards to
    its bind, and the "local" timing assumes loopback round trips)."""

    compression: Sequence[str] = ()
    """Transport compression codecs offered and accepted, in order of preference: "zstd"
    (installed with CopyCat) and "lz4" (install `copycat-replication[compression]`).
    A codec whose package is missing is skipped with a warning; none of them installed
    is a `ConfigError` when the node starts. Default (): none. Saves WAN bandwidth at
    the cost of CPU on both ends; lz4 is cheaper, zstd compresses more. No codec twice."""

    leader_follows_writers: bool = False
    """Whether a group's leadership moves to the data center its proposals come from. A
    proposal made on a follower's node travels to the leader first, so it commits in
    about 2 round trips instead of 1; across data centers that is most of its latency.
    With this on, the leader of a group whose proposals come mostly (three quarters or
    more) from one other data center, for `leader_follow_after_s` in a row, hands its
    leadership to a voter there (the writing node itself when it is one); a leader that a
    move brought moves it again no sooner than 4 x `leader_follow_after_s`, and two data
    centers writing alike never move it. Every move is logged at info and counted
    (`leader_moves_followed`). Leadership moves only where the group has a voter.
    Default False; `Config.wan()` turns it on. See docs/wan.md."""

    leader_follow_after_s: float = 15.0
    """How long one other data center must send most of a group's proposals before its
    leadership follows them (with `leader_follows_writers`). Default 15 s. Shorter
    follows a writer that moves sooner, at the cost of leader transfers (each pauses the
    group's proposals for about a round trip) for bursts that would have ended anyway.
    Positive."""

    http_port: int | None = None
    """TCP port of the node's HTTP endpoint for operators: `/metrics` (Prometheus),
    `/status` (JSON: members, groups, leaders, lag), `/healthz` and `/readyz`
    (docs/operations.md). It listens on the bind address (`bind_host`, else
    `hostname`), plain HTTP and without authentication: keep it on a network only
    operators reach. Default None: no endpoint (metrics stay readable in-process with
    `CopyCat.metrics()`). 0 lets the OS pick (read it back from `CopyCat.http_address`).
    Must differ from `port` and `gossip_port`."""

    log_format: Literal["text", "json"] = "text"
    """How CopyCat's log lines look when the program configured no logging of its own
    (no handler on the root logger): "text" (time, level, logger, message) or "json"
    (one object per line: time, level, logger, message, exception). Default "text".
    Either way the node logs at info and above to stderr then; a program that
    configures logging (even after the node started) gets CopyCat's records through
    its own handlers instead, and this setting does nothing."""

    # -- validation ---------------------------------------------------------------------

    def __post_init__(self) -> None:
        for name in ("peers_to_contact", "gossip_keys", "compression"):
            value = getattr(self, name)
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise ConfigError(name, "must be a list or tuple of strings, not a single value")
            object.__setattr__(self, name, tuple(value))
        if isinstance(self.data_dir, os.PathLike):
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the first field that breaks its rule (run at
        construction; a `Config` that exists is valid)."""
        _check_host("hostname", self.hostname, wildcard=False)
        _check_port("port", self.port)
        _check_port("gossip_port", self.gossip_port)
        if self.port != 0 and self.port == self.gossip_port:
            raise ConfigError(
                "gossip_port", f"must differ from port ({self.port}) unless both are 0"
            )
        self._validate_bind_and_advertise()
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ConfigError("data_dir", "must be a non-empty path")
        for peer in self.peers_to_contact:
            _split_host_port("peers_to_contact", peer)
        _check_label("data_center", self.data_center)
        _check_label("rack", self.rack)
        if self.node_name is not None:
            _check_label("node_name", self.node_name)
        _check_label("cluster_name", self.cluster_name)
        if self.node_id is not None and (
            not _is_int(self.node_id) or not 1 <= self.node_id <= MAX_NODE_ID
        ):
            raise ConfigError("node_id", "must be None or an integer from 1 to 2**63 - 1")
        self._validate_security()
        self._validate_tuning()

    def _validate_bind_and_advertise(self) -> None:
        if self.bind_host is not None:
            _check_host("bind_host", self.bind_host, wildcard=True)
        for name in ("advertise_port", "advertise_gossip_port"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 1 <= value <= 65535):
                raise ConfigError(name, "must be None or an integer from 1 to 65535")
        if (
            self._gossip_advertised_apart
            and self.advertise_gossip_port is None
            and self.gossip_port == 0
        ):
            raise ConfigError(
                "advertise_gossip_port",
                f"must be given when gossip_port is 0 and bind_host ({self.bind_host!r}) "
                f"differs from hostname ({self.hostname!r}): the gossip layer publishes "
                "its address before it binds, so it cannot publish a port the OS picks; "
                "give a fixed gossip_port (or the published port here)",
            )
        transport = self.port if self.advertise_port is None else self.advertise_port
        gossip = (
            self.gossip_port if self.advertise_gossip_port is None else self.advertise_gossip_port
        )
        if (
            (self.advertise_port is not None or self.advertise_gossip_port is not None)
            and transport != 0
            and transport == gossip
        ):
            raise ConfigError(
                "advertise_gossip_port",
                f"publishes the same port as the transport ({transport}) on {self.hostname!r}: "
                "the two must differ",
            )

    @property
    def _gossip_advertised_apart(self) -> bool:
        """Whether gossip publishes another address than it binds (kinship's `advertise`)."""
        moved_host = self.bind_host is not None and self.bind_host != self.hostname
        moved_port = (
            self.advertise_gossip_port is not None
            and self.advertise_gossip_port != self.gossip_port
        )
        return moved_host or moved_port

    @property
    def _on_loopback(self) -> bool:
        """The loopback rule (see `gossip_preset`): the published address and the bound
        one are both loopback."""
        return is_loopback(self.hostname) and (
            self.bind_host is None or is_loopback(self.bind_host)
        )

    def _where(self) -> str:
        """The addresses the loopback rule judged, for error messages."""
        if self.bind_host is None:
            return f"hostname is {self.hostname!r}"
        return (
            f"hostname is {self.hostname!r} with bind_host {self.bind_host!r} (both must be "
            "loopback; a wildcard is not)"
        )

    def _validate_security(self) -> None:
        tls = {
            "tls_ca_file": self.tls_ca_file,
            "tls_cert_file": self.tls_cert_file,
            "tls_key_file": self.tls_key_file,
        }
        for name, value in tls.items():
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(name, "must be None or the path of a PEM file")
        given = [name for name, value in tls.items() if value is not None]
        if given and len(given) != len(tls):
            missing = sorted(set(tls) - set(given))
            raise ConfigError(
                missing[0],
                "the TLS files go together: give tls_ca_file, tls_cert_file and "
                f"tls_key_file, or none of them (missing: {', '.join(missing)})",
            )
        seen: set[bytes] = set()
        for key in self.gossip_keys:
            raw = _decode_key(key)
            if raw in seen:
                raise ConfigError("gossip_keys", "lists the same key twice")
            seen.add(raw)
        if not isinstance(self.tls_bind_node_id, bool):
            raise ConfigError("tls_bind_node_id", "must be True or False")
        if self.tls_bind_node_id and self.tls_ca_file is None:
            raise ConfigError(
                "tls_bind_node_id", "binds node ids to TLS certificates: give the TLS files too"
            )
        if not isinstance(self.insecure_plaintext_gossip, bool):
            raise ConfigError("insecure_plaintext_gossip", "must be True or False")
        if self.gossip_preset not in GOSSIP_PRESETS:
            raise ConfigError("gossip_preset", f"must be one of {', '.join(GOSSIP_PRESETS)}")
        loopback = self._on_loopback
        if self.gossip_preset == "local" and not loopback:
            raise ConfigError(
                "gossip_preset",
                f"'local' runs on loopback only and {self._where()}; "
                "use 'lan' or 'wan' (Config.lan() or Config.wan())",
            )
        if (
            not self.gossip_keys
            and not self.insecure_plaintext_gossip
            and (not loopback or self.gossip_preset != "local")
        ):
            raise ConfigError(
                "gossip_keys",
                "gossip keys are required off loopback and with the 'lan' and 'wan' "
                "presets (make one with `python -m kinship keygen`), or set "
                "insecure_plaintext_gossip=True on a trusted network",
            )

    def _validate_tuning(self) -> None:
        if not isinstance(self.durable, bool):
            raise ConfigError("durable", "must be True or False")
        _check_seconds("tick_interval_s", self.tick_interval_s)
        _check_int("election_ticks", self.election_ticks, 2, 10_000)
        _check_int("snapshot_every_entries", self.snapshot_every_entries, 1, 1 << 62)
        _check_int("snapshot_keep_entries", self.snapshot_keep_entries, 0, 1 << 62)
        _check_seconds("repair_grace_s", self.repair_grace_s)
        _check_seconds("proposal_timeout_s", self.proposal_timeout_s)
        election_timeout_s = self.election_ticks * self.tick_interval_s
        if self.proposal_timeout_s < 2 * election_timeout_s:
            raise ConfigError(
                "proposal_timeout_s",
                f"must be at least twice the election timeout (2 x election_ticks x "
                f"tick_interval_s = {2 * election_timeout_s:g} s), so that one leader "
                "change never fails a proposal",
            )
        _check_int("replicas", self.replicas, 1, 1 << 16)
        if not isinstance(self.leader_follows_writers, bool):
            raise ConfigError("leader_follows_writers", "must be True or False")
        _check_seconds("leader_follow_after_s", self.leader_follow_after_s)
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format", "must be 'text' or 'json'")
        if self.http_port is not None:
            _check_port("http_port", self.http_port)
            if self.http_port != 0 and self.http_port in (self.port, self.gossip_port):
                raise ConfigError("http_port", "must differ from port and gossip_port")
        for codec in self.compression:
            if codec not in COMPRESSION_CODECS:
                raise ConfigError(
                    "compression",
                    f"unknown codec {codec!r}; known: {', '.join(COMPRESSION_CODECS)}",
                )
        if len(set(self.compression)) != len(self.compression):
            raise ConfigError("compression", "lists a codec twice")

    # -- presets ------------------------------------------------------------------------

    @classmethod
    def default(cls) -> Config:
        """The defaults: one node on one machine (loopback, ports 7458/7459, data under
        ./copy-cat-db, durable, "local" gossip). The same as `Config()`."""
        return cls()

    @classmethod
    def local(cls, **overrides: Unpack[_ConfigKwargs]) -> Config:
        """Tests, demos and development clusters on one machine, several nodes per host.

        Differences from the default, and why:

        * `port=0`, `gossip_port=0`: the OS picks free ports, so many nodes (and parallel
          test runs) share a host without colliding. Read the bound ports back from the
          node; a peer joins through the first node's gossip port.
        * `durable=False`: data on a dev box is throwaway, and without fsync a test
          cluster runs several times faster. Killing a process (even with SIGKILL) still
          loses nothing: only a machine crash loses the latest writes.
        * `tick_interval_s=0.05`: loopback round trips are microseconds, so a failover in
          0.5 to 1 s keeps tests and demos quick.
        * `repair_grace_s=10`: a killed node's replicas are rebuilt within seconds, so a
          demo shows repair; on one machine a node that is gone for 10 s is really gone.

        Pass `data_dir` (a fresh temporary directory per node, for example
        `tempfile.mkdtemp()`): nodes must not share one. Nothing is created here.
        """
        settings: _ConfigKwargs = {
            "port": 0,
            "gossip_port": 0,
            "durable": False,
            "tick_interval_s": 0.05,
            "repair_grace_s": 10.0,
        }
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def lan(cls, **overrides: Unpack[_ConfigKwargs]) -> Config:
        """Nodes within one data center. Give `hostname` (this node's address on the LAN)
        and `gossip_keys` (or `insecure_plaintext_gossip=True` on a trusted network).

        Differences from the default, and why:

        * `gossip_preset="lan"`: probing every second instead of every 0.2 s keeps gossip
          traffic low on a shared network and avoids false suspicion of a node that is
          briefly busy, while still detecting a failure within a few seconds.

        Raft timing stays at the default (0.1 s ticks, failover in 1 to 2 s): LAN round
        trips are well under a millisecond.
        """
        settings: _ConfigKwargs = {
            "gossip_preset": "lan",
        }
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def wan(cls, *, max_rtt_s: float = 0.15, **overrides: Unpack[_ConfigKwargs]) -> Config:
        """Nodes across regions or data centers joined by slow or lossy links. Give
        `hostname` (this node's routable address), `gossip_keys` and TLS files (the
        traffic crosses networks you do not own), and `max_rtt_s`: the longest round
        trip between two of your data centers, in seconds (default 0.15; measure it with
        `ping` between the hosts and round up: the timing below is scaled to it).

        Differences from the default, and why:

        * `tick_interval_s=max(0.2, max_rtt_s)`, with `election_ticks` 10: a leader
          heartbeats every tick and a follower campaigns after 10 to 20 ticks without
          one, so the election timeout is at least 10 round trips and ordinary jitter
          and a retransmission never trigger an election (none in 10 minutes at 150 ms
          with 20 ms of jitter, `benchmarks/wan.py`). A dead leader is replaced after 2
          to 4 s (up to `max_rtt_s` 0.2) plus a few round trips. Check-quorum and
          pre-vote stay on.
        * `leader_follows_writers=True`: a group's leadership moves to the data center
          its proposals come from, so a lone writer commits in 1 round trip, not 2
          (docs/wan.md).
        * `gossip_preset="wan"`: probes every 5 s with slower suspicion, so that a lossy
          long-distance link does not make healthy nodes look dead. Failover does not
          wait for it: raft's own timeouts replace a dead leader.
        * `compression=("zstd", "lz4")`: WAN bandwidth costs more than CPU; large append
          batches and snapshots shrink several times (zstd is installed with CopyCat;
          lz4 with the `compression` extra, skipped when missing).
        * `proposal_timeout_s=60` (or 40 round trips, if more): commits need a
          cross-region quorum and failovers take longer, so proposals get more time
          before their outcome is reported unknown.
        """
        if (
            isinstance(max_rtt_s, bool)
            or not isinstance(max_rtt_s, int | float)
            or not 0 < max_rtt_s <= 10
        ):
            raise ConfigError("max_rtt_s", "must be a number of seconds above 0, at most 10")
        settings: _ConfigKwargs = {
            "gossip_preset": "wan",
            "compression": ("zstd", "lz4"),
            "tick_interval_s": max(0.2, float(max_rtt_s)),
            "proposal_timeout_s": max(60.0, 40 * float(max_rtt_s)),
            "leader_follows_writers": True,
        }
        settings.update(overrides)
        return cls(**settings)

    # -- environment --------------------------------------------------------------------

    @classmethod
    def from_env(
        cls,
        prefix: str = "COPYCAT_",
        *,
        environ: Mapping[str, str] | None = None,
        base: Config | None = None,
    ) -> Config:
        """A `Config` from environment variables, for `copycat node` and containers.

        Each field reads the variable named after it in upper case behind `prefix`:
        `COPYCAT_HOSTNAME`, `COPYCAT_PORT`, `COPYCAT_PEERS_TO_CONTACT`, ... Fields whose
        variable is unset (or empty, for optional fields) keep their value from `base`
        (default: `Config.default()`; pass a preset such as `Config.lan(...)` to start
        from it). Value syntax:

        * integers and seconds in decimal (`COPYCAT_TICK_INTERVAL_S=0.05`);
        * booleans as 1/0, true/false, yes/no or on/off (any case);
        * lists (`PEERS_TO_CONTACT`, `GOSSIP_KEYS`, `COMPRESSION`) separated by commas
          or whitespace, as the original's space-separated peer list;
        * `COPYCAT_NODE_ID` empty or unset means "generate and persist"; the other
          optional fields (`BIND_HOST`, `ADVERTISE_PORT`, `ADVERTISE_GOSSIP_PORT`, the TLS
          files) empty keep the base's value, None by default.

        A variable behind `prefix` that names no field raises `ConfigError` (a typo must
        not silently fall back to a default), as does a value that does not parse.
        `environ` defaults to `os.environ`.
        """
        env = os.environ if environ is None else environ
        start = cls.default() if base is None else base
        known = {f"{prefix}{f.name.upper()}": f.name for f in fields(cls)}
        for variable in env:
            if variable.startswith(prefix) and variable not in known:
                raise ConfigError(
                    variable,
                    f"unknown setting; known variables: {', '.join(sorted(known))}",
                )
        changes: dict[str, object] = {}
        for variable, name in known.items():
            text = env.get(variable)
            if text is None:
                continue
            parsed = _parse_env(name, variable, text.strip())
            if parsed is not _UNSET:
                changes[name] = parsed
        # `_parse_env` gives each field a value of its declared type (and validation
        # checks again), which mypy cannot follow through the name-keyed dict.
        return replace(start, **cast("_ConfigKwargs", changes))

    # -- sub-configs --------------------------------------------------------------------

    @property
    def node_id_file(self) -> Path:
        """Where the node keeps its generated id: `<data_dir>/node_id` (decimal text)."""
        return Path(self.data_dir) / NODE_ID_FILE

    def resolve_node_id(self, node_id: int | None = None) -> int:
        """The node id to run with: `node_id` if given (the id the node generated or read
        from `node_id_file`), else `self.node_id`. Raises `ConfigError("node_id", ...)`
        when neither is set, or when both are and they differ."""
        if node_id is None:
            if self.node_id is None:
                raise ConfigError(
                    "node_id",
                    "is None (generate it): pass the id the node generated and "
                    f"persisted in {self.node_id_file}",
                )
            return self.node_id
        if not _is_int(node_id) or not 1 <= node_id <= MAX_NODE_ID:
            raise ConfigError("node_id", "must be an integer from 1 to 2**63 - 1")
        if self.node_id is not None and node_id != self.node_id:
            raise ConfigError("node_id", f"the config says {self.node_id} but {node_id} was passed")
        return node_id

    @property
    def _bound_host(self) -> str:
        """The address the transport and gossip listen on: `bind_host`, else `hostname`."""
        return self.hostname if self.bind_host is None else self.bind_host

    def transport_config(self, node_id: int | None = None) -> TransportConfig:
        """The transport endpoint's settings: binds `bind_host:port` (`bind_host`, else
        `hostname`; the published port is `membership_config`'s business), the cluster
        name, mutual TLS when the TLS files are set, and `compression`. Every other knob
        keeps the transport's default. `node_id` as in `resolve_node_id`."""
        from copycat.transport import TLSConfig, TransportConfig

        tls = None
        if self.tls_ca_file is not None:
            assert self.tls_cert_file is not None  # validate(): all three or none
            assert self.tls_key_file is not None
            tls = TLSConfig(
                ca_file=self.tls_ca_file,
                cert_file=self.tls_cert_file,
                key_file=self.tls_key_file,
                bind_node_id=self.tls_bind_node_id,
            )
        return TransportConfig(
            node_id=self.resolve_node_id(node_id),
            cluster_name=self.cluster_name,
            host=self._bound_host,
            port=self.port,
            tls=tls,
            compression=tuple(self.compression),
        )

    def membership_config(
        self, node_id: int | None = None, *, transport_port: int | None = None
    ) -> MembershipConfig:
        """The membership layer's settings: the peers, keys, preset, cluster name, data
        center and rack, and the addresses:

        * gossip binds `bind_host:gossip_port` (`bind_host`, else `hostname`);
        * gossip publishes `hostname:(advertise_gossip_port or the bound gossip port)`,
          passed as `gossip_advertise` when it differs from the bind (else None: kinship
          publishes what it bound, the OS-picked port included);
        * the transport address published is `hostname:(advertise_port or the bound
          transport port)`.

        `transport_port` is the port the transport actually bound: required when `port`
        is 0 (the OS picked it) and `advertise_port` is None, ignored otherwise unless
        given. `node_id` as in `resolve_node_id`.
        """
        from copycat.membership import MembershipConfig

        bound = self.port if transport_port is None else transport_port
        if transport_port is not None:
            _check_port("transport_port", transport_port)
        published = bound if self.advertise_port is None else self.advertise_port
        if published == 0:
            raise ConfigError(
                "port",
                "is 0 (the OS picks it): pass transport_port, the port the transport bound, "
                "so other nodes can reach it",
            )
        gossip_advertise = None
        if self._gossip_advertised_apart:
            gossip_port = (
                self.gossip_port
                if self.advertise_gossip_port is None
                else self.advertise_gossip_port
            )
            gossip_advertise = _join_host_port(self.hostname, gossip_port)
        return MembershipConfig(
            node_id=self.resolve_node_id(node_id),
            gossip_host=self._bound_host,
            gossip_port=self.gossip_port,
            gossip_advertise=gossip_advertise,
            peers_to_contact=tuple(self.peers_to_contact),
            cluster_name=self.cluster_name,
            encryption_keys=tuple(self.gossip_keys),
            preset=self.gossip_preset,
            transport_address=_join_host_port(self.hostname, published),
            data_center=self.data_center,
            rack=self.rack,
            node_name=self.node_name,
            insecure_plaintext=self.insecure_plaintext_gossip,
        )

    def host_config(self, node_id: int | None = None) -> HostConfig:
        """The multi-raft host's settings: ticks, elections, snapshots and proposal
        timing. A proposal not seen committed is retried after
        `proposal_retry_s = min(proposal_timeout_s, max(1 s, election_ticks x
        tick_interval_s))`: about one election timeout, so a retry waits out a failover
        instead of piling onto it. Quiescence keeps the host's default, lowered to
        `election_ticks - 1` when elections are quicker. Every other knob keeps the
        host's default. `node_id`
        as in `resolve_node_id`."""
        from copycat.host import HostConfig

        retry_s = min(self.proposal_timeout_s, max(1.0, self.election_ticks * self.tick_interval_s))
        # The host requires quiescence to start before an election timeout; keep its
        # default unless `election_ticks` is too small for it.
        quiesce_default = next(
            (f.default for f in fields(HostConfig) if f.name == "quiesce_after_ticks"), 1
        )
        quiesce = quiesce_default if isinstance(quiesce_default, int) else 1
        return HostConfig(
            node_id=self.resolve_node_id(node_id),
            tick_interval_s=self.tick_interval_s,
            election_ticks=self.election_ticks,
            quiesce_after_ticks=min(quiesce, self.election_ticks - 1),
            snapshot_every_entries=self.snapshot_every_entries,
            snapshot_keep_entries=self.snapshot_keep_entries,
            proposal_timeout_s=self.proposal_timeout_s,
            proposal_retry_s=retry_s,
        )

    @property
    def log_store_dir(self) -> Path:
        """Where the node's log store lives: `<data_dir>/raft`."""
        return Path(self.data_dir) / LOG_STORE_DIR

    def open_log_store(self) -> LogStore:
        """Open (creating when missing) the node's log store in `log_store_dir`, fsyncing
        when `durable`. The one method here that touches the disk."""
        from copycat.storage import open_log_store

        return open_log_store(self.log_store_dir, durable=self.durable)


def _with_field_docs(cls: type[Config]) -> str | None:
    """`cls.__doc__` followed by a "Fields" section (each field's name, type, default and
    docstring), so that `help(Config)` shows every knob's documentation. The field
    docstrings are read from this module's source: Python keeps no string written below
    a field. Without the source (a build that ships bytecode only), the docstring stays
    as it is. Imports are local to keep this self-contained: it runs once, at import."""
    import ast
    import dataclasses
    import inspect
    import sys

    doc = cls.__doc__
    if sys.flags.optimize >= 2:  # -OO: docstrings are stripped on purpose
        return doc
    try:
        tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    except (OSError, TypeError):
        return doc
    body = next(n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config")
    known: dict[str, tuple[str, str]] = {}
    for node, below in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = ""
            if isinstance(below, ast.Expr) and isinstance(below.value, ast.Constant):
                value = below.value.value
                text = inspect.cleandoc(value) if isinstance(value, str) else ""
            known[node.target.id] = (ast.unparse(node.annotation), text)
    lines = [inspect.cleandoc(doc or ""), "", "Fields", "------"]
    for f in dataclasses.fields(cls):
        kind, text = known.get(f.name, ("", ""))
        default = "" if f.default is dataclasses.MISSING else f" = {f.default!r}"
        lines += ["", f"{f.name}: {kind}{default}"]
        lines += [f"    {line}" if line else "" for line in text.splitlines()]
    return "\n".join(lines)


Config.__doc__ = _with_field_docs(Config)


# -- helpers ------------------------------------------------------------------------------

_UNSET: Final = object()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(name, f"must be an integer from {low:,} to {high:,}")


def _check_seconds(name: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(name, "must be a finite number of seconds above 0")


def _check_port(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(name, "must be an integer from 0 to 65535")


def _check_label(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(name, "must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_LABEL_BYTES:
        raise ConfigError(name, f"must be at most {MAX_LABEL_BYTES} UTF-8 bytes")
    if not value.isprintable():
        raise ConfigError(name, "must hold printable characters only")


def _check_host(name: str, value: object, *, wildcard: bool) -> None:
    """An IP address (IPv6 without brackets) or a DNS name of at most 190 characters; a
    wildcard ("0.0.0.0", "::") only when `wildcard` (a bind address, never a published one)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(name, "must be a non-empty IP address or DNS name")
    if len(value) > MAX_HOSTNAME_CHARS:
        raise ConfigError(name, f"must be at most {MAX_HOSTNAME_CHARS} characters")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME_RE.match(value):
            raise ConfigError(
                name,
                f"{value!r} is neither an IP address (IPv6 without brackets) nor a DNS name",
            ) from None
        return
    if address.is_unspecified and not wildcard:
        raise ConfigError(
            name,
            f"{value!r} is a wildcard address, which other nodes cannot dial; give the "
            "address this node is reachable at (and bind the wildcard with bind_host)",
        )


def _split_host_port(name: str, value: object) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(name, f"{value!r} is not 'host:port'")
    host, _, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(name, f"{value!r}: write an IPv6 address in brackets, '[::1]:7459'")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(name, f"{value!r} is not 'host:port' with a port from 1 to 65535")
    return host, int(port_text)


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _decode_key(key: object) -> bytes:
    if not isinstance(key, str):
        raise ConfigError("gossip_keys", "each key must be base64 text")
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("gossip_keys", "a key is not valid base64") from None
    if len(raw) != GOSSIP_KEY_BYTES:
        raise ConfigError(
            "gossip_keys",
            f"a key decodes to {len(raw)} bytes; keys are {GOSSIP_KEY_BYTES} bytes "
            "(`python -m kinship keygen`)",
        )
    return raw


_INT_FIELDS: Final = frozenset(
    {
        "port",
        "gossip_port",
        "advertise_port",
        "advertise_gossip_port",
        "election_ticks",
        "snapshot_every_entries",
        "snapshot_keep_entries",
        "replicas",
        "http_port",
    }
)
_FLOAT_FIELDS: Final = frozenset(
    {"tick_interval_s", "proposal_timeout_s", "repair_grace_s", "leader_follow_after_s"}
)
_BOOL_FIELDS: Final = frozenset(
    {"durable", "insecure_plaintext_gossip", "tls_bind_node_id", "leader_follows_writers"}
)
_LIST_FIELDS: Final = frozenset({"peers_to_contact", "gossip_keys", "compression"})
_OPTIONAL_FIELDS: Final = frozenset(
    {
        "node_id",
        "bind_host",
        "advertise_port",
        "advertise_gossip_port",
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
        "http_port",
    }
)


def _parse_env(name: str, variable: str, text: str) -> object:
    """The value of field `name` from the text of `variable`, or `_UNSET` to keep the
    base's value. Errors name the field (and quote the variable)."""
    if name in _OPTIONAL_FIELDS and not text:
        return _UNSET
    if name in _INT_FIELDS or name == "node_id":
        try:
            return int(text, 10)
        except ValueError:
            raise ConfigError(name, f"{variable}={text!r} is not an integer") from None
    if name in _FLOAT_FIELDS:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(name, f"{variable}={text!r} is not a number") from None
    if name in _BOOL_FIELDS:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(name, f"{variable}={text!r} is not a boolean (1/0, true/false)")
    if name in _LIST_FIELDS:
        return tuple(part for part in re.split(r"[,\s]+", text) if part)
    return text
