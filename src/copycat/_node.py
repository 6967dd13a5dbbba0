"""The public node: `CopyCat` (one per process, usually) and `Subscription`.

What lives here: composition of the layers (storage, transport, membership, host,
placement) into the API of ../shared/DESIGN.md, and the control requests that start
groups on other nodes. What must not: raft logic (in `copycat.raft` / `copycat.host`),
wire formats, placement arithmetic.

Choices worth knowing:
* A node hosts at most one member of a group, whose raft id is the node id. A subscriber
  on a node that already hosts a (detached) voter attaches to that voter rather than
  adding a second member: one copy of the log per node, and the subscriber's proposals
  skip a forwarding hop.
* A data structure's raft group id is its ULID as a 128-bit integer.
* Subscribing to an id no live node hosts starts a new group for it, placed like
  `allocate_data_structure` with as many replicas as the cluster can give (at most the
  configured default), as the original did.
* Every group has a replica rule (replicas, data center replicas), fixed when it is
  created and kept by each voter in the group's metadata record; the creator passes it
  in its `create_group` and `start_replica` requests, and a node that adds a replica
  passes it on. The leader's repair scan tops a group up to its rule as nodes join.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from copycat._ids import DataStructureId, group_name
from copycat._logs import NodeLabel, install_default_handler, node_name_bound
from copycat._observe import Observer
from copycat._world import REAL_WORLD, World
from copycat.errors import (
    ArgumentError,
    BrokenError,
    ClosedError,
    ConfigError,
    CopyCatError,
    GroupNotFoundError,
    InvalidIdError,
    NotLeaderError,
    PeerUnreachableError,
    ProposalTimeoutError,
    RecoveryRefusedError,
    SplitGroupError,
)
from copycat.host import (
    SESSION_ID_BYTES,
    Creation,
    CreationConfig,
    FollowConfig,
    Host,
    KnownNodes,
    LeaderFollower,
    Leave,
    LeaveConfig,
    Method,
    Recovery,
    RecoveryReport,
    Repair,
    RepairConfig,
    ReplicaRule,
    Session,
    Tombstones,
    encode_ints,
)
from copycat.membership import (
    DirectoryChanged,
    DirectoryEntry,
    MemberFailed,
    MemberInfo,
    MemberJoined,
    MemberLeft,
    MemberRecovered,
    Membership,
    Role,
)
from copycat.transport import Endpoint, Transport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path
    from types import TracebackType

    from copycat._config import Config
    from copycat._snapshot import LoadSnapshot, SnapshotProvider
    from copycat.host import Feed
    from copycat.storage import LogStore

log = logging.getLogger("copycat")

RECOVERY_HEARD_WITHIN_ELECTIONS: Final = 3
"""`recover` counts a voter reachable when raft heard from it within this many election
timeouts (`election_ticks` x `tick_interval_s`), whatever gossip says."""

DEFAULT_LEAVE_TIMEOUT_S: Final = 120.0
"""How long `CopyCat.leave()` hands replicas over, when not told, before it gives up on
the groups left and shuts down anyway."""


def _load_node_id(path: Path, configured: int | None) -> int:
    """The node's id: configured, or generated once and kept in the data dir."""
    data_dir = path.parent
    if path.exists():
        stored = int(path.read_text().strip())
        if configured is not None and configured != stored:
            raise ConfigError(
                "node_id",
                f"the data dir {data_dir} belongs to node {stored}, not {configured}; "
                "use another data dir or the same node id",
            )
        return stored
    node_id = configured or (int.from_bytes(os.urandom(8), "big") >> 1) or 1
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{node_id}\n")
    os.replace(tmp, path)
    return node_id


CLUSTER_NAME_FILE: Final = "cluster_name"
"""Name of the file under the data dir that records the cluster the data belongs to."""


def _check_cluster_name(path: Path, name: str) -> None:
    """Refuse a data dir written under another cluster name (its groups and ids belong
    to that cluster); record the name in a data dir that has none yet."""
    if path.exists():
        stored = path.read_text(encoding="utf-8").rstrip("\n")
        if stored != name:
            raise ConfigError(
                "cluster_name",
                f"the data dir {path.parent} holds the data of cluster {stored!r}, not "
                f"{name!r}: use that cluster name, or another data dir for this cluster",
            )
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{name}\n", encoding="utf-8")
    os.replace(tmp, path)


_MEMBER_EVENTS: Final = {
    MemberJoined: "joined",
    MemberRecovered: "is back (it refuted its suspicion or returned)",
    MemberFailed: "failed (gossip suspects it dead; its replicas wait repair_grace_s)",
    MemberLeft: "left the cluster",
}


def _log_member_event(event: object) -> None:
    """Member joins, failures and departures at info (warning for a failure)."""
    for kind, what in _MEMBER_EVENTS.items():
        if isinstance(event, kind):
            member = event.member  # type: ignore[attr-defined]
            address = member.transport_address or member.gossip_address
            name = member.name or address
            log.log(
                logging.WARNING if kind is MemberFailed else logging.INFO,
                "member %s (node %d, %s%s/%s) %s",
                name,
                member.node_id,
                "" if name == address else f"{address}, ",
                member.data_center,
                member.rack,
                what,
            )
            return


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _legacy_id(gid: int) -> int:
    """The group id as the directory carries it (63 bits). The full 128-bit raft group
    id is the data structure's ULID, which the directory entry names anyway."""
    return (gid & ((1 << 63) - 1)) or 1


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupInfo:
    """One raft group this node hosts a member of, as `CopyCat.groups()` reports it."""

    data_structure_id: str
    member: str
    """"subscriber" (a subscription is attached), "learner" or "voter"."""
    raft_role: str
    leader_id: int
    term: int
    commit: int
    applied: int
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    replicas_on: tuple[int, ...]
    """Nodes the directory says host a replica (as this node knows it)."""
    split_with: tuple[int, ...] = ()
    """Nodes seen hosting another raft group under the same id (empty: none seen)."""
    refusing_writes: bool = False
    """This group refuses new proposals (the younger of two under one id)."""


class CopyCat:
    """A CopyCat node. Use `async with CopyCat(config) as cc:`, or `start()` and
    `shutdown()`."""

    def __init__(self, config: Config, *, world: World = REAL_WORLD) -> None:
        """`world` is for `copycat.testing.sim`, which runs nodes on simulated time,
        network, gossip and disk; programs leave it out."""
        self.config = config
        self.world = world
        self._started = False
        self._closed = False
        self.node_id = 0
        self._host: Host | None = None
        self._store: LogStore | None = None
        self._endpoint: Transport | None = None
        self._membership: Membership | None = None
        self._watch: asyncio.Task[None] | None = None
        self._repair: Repair | None = None
        self._follower: LeaderFollower | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._leave: Leave | None = None
        self._tombstones: Tombstones | None = None
        self._creation: Creation | None = None
        self._recovery: Recovery | None = None
        self._leaving = False
        self._subscriptions: dict[int, Subscription] = {}
        self._rejoins: dict[int, asyncio.Task[None]] = {}
        self._published: dict[int, int] = {}
        """The directory group id last published for each group hosted here."""
        self._observer = Observer(self)
        """Metrics, status and health (served over HTTP when `http_port` is set)."""
        self._observer.add_action("/recover", self._serve_recover)
        self._published_address = ""
        """The transport address other nodes dial, once started (see `address`)."""
        self._split_with: dict[int, tuple[int, ...]] = {}
        """Groups seen split: the nodes hosting the other group under the same id."""
        self._label = NodeLabel(config.node_name or "starting")
        """The name this node's log records carry (see `name`)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> CopyCat:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Open the data dir, start the transport, join the cluster, resume every group."""
        if self._closed:
            raise ClosedError(
                "this node was shut down and cannot start again: make a new CopyCat "
                "with the same config (its data dir keeps its state)"
            )
        if self._started:
            raise CopyCatError("this node is already started")
        self._started = True
        install_default_handler(self.config.log_format)
        with node_name_bound(self._label):  # the tasks started now keep the name
            try:
                await self._open()
            except BaseException:
                # Close whatever was opened (ports, the store's lock), then report it.
                await self._close_parts()
                self._closed = True
                raise
            log.info(
                "node %s started: id %d, data center %s, rack %s, transport at %s, gossip at %s",
                self.name,
                self.node_id,
                self.config.data_center,
                self.config.rack,
                self.address,
                self.gossip_address,
            )

    async def _open(self) -> None:
        cfg = self.config
        self.node_id = _load_node_id(cfg.node_id_file, cfg.node_id)
        if cfg.node_name is None and cfg.port and cfg.advertise_port is None:
            self._label.name = _join(cfg.hostname, cfg.port)  # known before the bind
        _check_cluster_name(cfg.node_id_file.parent / CLUSTER_NAME_FILE, cfg.cluster_name)
        world = self.world
        store = cfg.open_log_store() if world.log_store is None else world.log_store(cfg)
        self._store = store
        transport_cfg = cfg.transport_config(self.node_id)
        endpoint = (
            Endpoint(transport_cfg) if world.transport is None else world.transport(transport_cfg)
        )
        await endpoint.start()
        self._endpoint = endpoint
        tombstones = Tombstones(cfg.node_id_file.parent / "tombstones")
        self._tombstones = tombstones
        host = Host(cfg.host_config(self.node_id), store, endpoint, recall=tombstones.retired)
        self._host = host
        membership_cfg = cfg.membership_config(self.node_id, transport_port=endpoint.address[1])
        self._published_address = membership_cfg.transport_address
        self._label.name = cfg.node_name or self._published_address
        membership = Membership(
            membership_cfg, gossip_factory=world.gossip, seed=world.random_bytes(16)
        )
        repair = Repair(
            RepairConfig(
                node_id=self.node_id,
                repair_grace_s=cfg.repair_grace_s,
                scan_interval_s=max(1.0, cfg.tick_interval_s * 10),
                replicas=cfg.replicas,
            ),
            host,
            call=self._call,
            view=membership.view,
            locate=self._hosts_of,
            publish=lambda gid: self._publish(upsert=[gid]),
            on_removed=self._member_removed,
            incarnations=self._incarnations,
            on_split=self._on_split,
        )
        self._repair = repair
        self._recovery = Recovery(
            host,
            membership.view,
            heard_within_s=RECOVERY_HEARD_WITHIN_ELECTIONS
            * cfg.election_ticks
            * cfg.tick_interval_s,
        )
        host.on_removed = repair.applied_own_removal
        if cfg.leader_follows_writers:
            view = membership.view

            def dc_of(node_id: int) -> str:
                member = view().member(node_id)
                return "" if member is None else member.data_center  # "": never a target

            self._follower = LeaderFollower(
                FollowConfig(node_id=self.node_id, after_s=cfg.leader_follow_after_s),
                host,
                dc_of,
            )
        creation = Creation(
            CreationConfig(
                node_id=self.node_id,
                replicas=cfg.replicas,
                proposal_timeout_s=cfg.proposal_timeout_s,
                tick_interval_s=cfg.tick_interval_s,
                peers_to_contact=tuple(cfg.peers_to_contact),
            ),
            host,
            repair,
            tombstones,
            known=KnownNodes(cfg.node_id_file.parent / "known_nodes", self.node_id),
            call=self._call,
            membership=membership,
            publish=lambda gid: self._publish(upsert=[gid]),
            leaving=lambda: self._leaving,
            random_bytes=world.random_bytes,
            wall_ms=world.wall_ms,
            new_id=self.new_data_structure_id,
        )
        self._creation = creation
        endpoint.register_request_handler(Method.CREATE_GROUP, creation.serve_create_group)
        endpoint.register_request_handler(Method.START_REPLICA, creation.serve_start_replica)
        endpoint.register_request_handler(Method.LOOKUP, creation.serve_lookup)
        endpoint.register_request_handler(Method.MEMBERSHIP_PROOF, repair.serve_membership_proof)
        self._leave = Leave(
            LeaveConfig(
                node_id=self.node_id,
                tick_interval_s=cfg.tick_interval_s,
                election_ticks=cfg.election_ticks,
                proposal_timeout_s=cfg.proposal_timeout_s,
            ),
            host,
            repair,
            call=self._call,
            view=membership.view,
            drop=self._drop_handed_over,
        )
        endpoint.register_request_handler(Method.HAND_OVER, self._leave.serve_hand_over)
        await membership.start()
        self._membership = membership
        creation.note_members()
        if not creation.cluster_seen:
            log.warning(
                "none of peers_to_contact (%s) answered: this node creates no group and "
                "serves no new subscription until it reaches the cluster; retrying (check "
                "the addresses, the cluster name and the gossip keys on both sides)",
                ", ".join(cfg.peers_to_contact),
            )
        await host.start()
        self._publish(upsert=list(host.groups))
        self._sync_peers()
        loop = asyncio.get_running_loop()
        self._watch = loop.create_task(self._watch_membership())
        repair.start()
        if self._follower is not None:
            self._follow_task = loop.create_task(self._follower.run())
        if cfg.http_port is not None:
            bind = cfg.hostname if cfg.bind_host is None else cfg.bind_host
            await self._observer.serve(bind, cfg.http_port)

    async def shutdown(self) -> None:
        """Leave the cluster and stop. Subscriptions are closed (their members stay)."""
        if self._closed or not self._started:
            self._closed = True
            return
        with node_name_bound(self._label):
            await self._shut_down()

    async def _shut_down(self) -> None:
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._repair is not None:
            await self._repair.stop()
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
        if self._follower is not None:
            await self._follower.close()
        for task in list(self._rejoins.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in list(self._subscriptions.values()):
            sub._detach()
        await self._close_parts()

    async def _close_parts(self) -> None:
        await self._observer.close()
        if self._host is not None:
            await self._host.close()
        if self._membership is not None:
            await self._membership.close(leave=True)
        if self._endpoint is not None:
            await self._endpoint.close()
        if self._store is not None:
            self._store.close()

    def _parts(self) -> tuple[Host, Transport, Membership]:
        if self._closed:
            raise ClosedError("this CopyCat node is shut down")
        if self._host is None or self._endpoint is None or self._membership is None:
            raise CopyCatError("start the node first: `async with CopyCat(config)`")
        return self._host, self._endpoint, self._membership

    # -- where this node is --------------------------------------------------------------

    @property
    def address(self) -> str:
        """This node's CopyCat transport address as published to the other nodes,
        "host:port" (`hostname`, and `advertise_port` or the port bound, which the OS
        picked when the config asked for port 0); `bind_host` may differ."""
        self._parts()
        return self._published_address

    @property
    def name(self) -> str:
        """This node's name for people: `Config.node_name`, else its published transport
        address. Every log line of the node and the other nodes' status show it."""
        self._parts()
        return self._label.name

    @property
    def gossip_address(self) -> str:
        """This node's gossip address, "host:port": what another node lists in
        `peers_to_contact` to join this cluster."""
        _, _, membership = self._parts()
        return membership.gossip_address

    def members(self) -> tuple[MemberInfo, ...]:
        """The live members of the cluster as this node sees them (itself included):
        node id, transport address, data center, rack, state."""
        _, _, membership = self._parts()
        return membership.view().members

    def groups(self) -> tuple[GroupInfo, ...]:
        """The raft groups this node hosts a member of, sorted by group id."""
        host, _, membership = self._parts()
        out = []
        for gid in sorted(host.groups):
            status = host.group_status(gid)
            if status is None:
                continue
            ds = str(DataStructureId.from_int(gid))
            if status.subscribed:
                member = "subscriber"
            elif self.node_id in status.learners:
                member = "learner"
            else:
                member = "voter"
            out.append(
                GroupInfo(
                    data_structure_id=ds,
                    member=member,
                    raft_role=status.role.name.lower(),
                    leader_id=status.leader_id,
                    term=status.term,
                    commit=status.commit,
                    applied=status.applied,
                    voters=tuple(sorted(status.voters)),
                    learners=tuple(sorted(status.learners)),
                    replicas_on=tuple(sorted({r.node_id for r in membership.locate(ds)})),
                    split_with=self._split_with.get(gid, ()),
                    refusing_writes=status.refusing_writes,
                )
            )
        return tuple(out)

    def counters(self) -> dict[str, int]:
        """The host's counters (cycles, entries persisted, messages, snapshots...) and
        the number of groups currently quiescent."""
        host, _, _ = self._parts()
        return {**host.counters, "quiescent_groups": host.quiescent_groups()}

    # -- observability ---------------------------------------------------------------------

    @property
    def http_address(self) -> str | None:
        """ "host:port" of the HTTP endpoint (`Config.http_port`), or None when off."""
        address = self._observer.address
        return None if address is None else _join(*address)

    def metrics(self) -> bytes:
        """Every metric of this node in the Prometheus text format (what `/metrics`
        serves), readable without the HTTP endpoint."""
        self._parts()
        return self._observer.metrics()

    def status(self, *, max_groups: int | None = None) -> dict[str, Any]:
        """This node, its members and its groups as plain data (what `/status` serves;
        docs/operations.md describes each field). With `max_groups`, only that many
        groups are described: those with a subscriber here first, then by group id
        (`groups_total` counts them all). Each group costs a few microseconds, so a node
        hosting 100,000 groups is best asked for a few."""
        if max_groups is not None and (
            isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 0
        ):
            raise ArgumentError(f"max_groups must be None or an integer >= 0, not {max_groups!r}")
        host, _, membership = self._parts()
        cfg = self.config
        members = [
            {
                "node_id": m.node_id,
                "name": m.name,
                "transport_address": m.transport_address,
                "data_center": m.data_center,
                "rack": m.rack,
                "state": m.state.value,
                "gossip_address": m.gossip_address,
            }
            for m in membership.view().members
        ]
        names = {m.node_id: m.name for m in membership.view().members}
        groups = []
        for gid in self._status_order(host, max_groups):
            status = host.group_status(gid)
            if status is None:
                continue
            followers: dict[str, dict[str, int]] = {}
            if status.is_leader:
                for node, match in sorted(host.matches(gid).items()):
                    if node != self.node_id:
                        lag = status.last_index - match
                        followers[str(node)] = {"match": match, "lag_entries": lag}
            subscriber = (
                None
                if status.delivered is None
                else {
                    "delivered": status.delivered,
                    "lag_entries": max(0, status.commit - status.delivered),
                    "lag_seconds": round(status.subscriber_lag_s, 3),
                }
            )
            groups.append(
                {
                    "data_structure_id": str(DataStructureId.from_int(gid)),
                    "group_id": gid,
                    "role": status.role.name.lower(),
                    "leader": status.leader_id,
                    "leader_name": names.get(status.leader_id),
                    "term": status.term,
                    "commit": status.commit,
                    "applied": status.applied,
                    "voters": sorted(status.voters),
                    "learners": sorted(status.learners),
                    "followers": followers,
                    "subscriber": subscriber,
                    "log_entries": status.log_entries,
                }
            )
        return {
            "node": {
                "node_id": self.node_id,
                "name": self.name,
                "transport_address": self.address,
                "gossip_address": self.gossip_address,
                "data_center": cfg.data_center,
                "rack": cfg.rack,
                "cluster_name": cfg.cluster_name,
            },
            "members": members,
            "groups": groups,
            "groups_total": len(host.groups),
        }

    def _status_order(self, host: Host, limit: int | None) -> list[int]:
        """The groups `status` describes: subscribed ones first, then by group id; at
        most `limit` (chosen in O(n log limit), not by sorting every group)."""
        subscribed = sorted(g for g in self._subscriptions if g in host.groups)
        if limit is None:
            rest = sorted(g for g in host.groups if g not in self._subscriptions)
            return subscribed + rest
        if len(subscribed) >= limit:
            return subscribed[:limit]
        wanted = limit - len(subscribed)
        rest = heapq.nsmallest(wanted, (g for g in host.groups if g not in self._subscriptions))
        return subscribed + rest

    def readiness(self) -> list[str]:
        """Why this node is not ready to serve its subscribers (empty: ready): it has not
        reached its cluster, or a subscribed group has no leader it knows."""
        if self._closed or not self._started or self._host is None:
            return ["the node is not running"]
        reasons = []
        if self._creation is not None and not self._creation.cluster_seen:
            reasons.append("no node of peers_to_contact answered yet")
        for gid in sorted(self._subscriptions):
            status = self._host.group_status(gid)
            if status is None or not status.leader_id:
                reasons.append(f"{DataStructureId.from_int(gid)} has no leader")
        return reasons

    def metric_counters(self) -> dict[str, dict[str, int]]:
        """The counters behind `copycat_<layer>_events_total`, by layer."""
        host, endpoint, membership = self._parts()
        out: dict[str, dict[str, int]] = {"host": dict(host.counters)}
        if self._repair is not None:
            out["repair"] = dict(self._repair.counters)
        stats = getattr(endpoint, "stats", None)
        if callable(stats):
            transport = stats()
            fields = getattr(transport, "__dataclass_fields__", {})
            out["transport"] = {
                name: int(getattr(transport, name))
                for name in fields
                if isinstance(getattr(transport, name), int)
            }
            out["transport_refused"] = dict(getattr(transport, "refused", {}))
        gossip = membership.counters()
        out["gossip"] = {
            name: int(getattr(gossip, name))
            for name in getattr(gossip, "__dataclass_fields__", {})
            if isinstance(getattr(gossip, name), int)
        }
        return out

    # -- peers -----------------------------------------------------------------------------

    def _sync_peers(self) -> None:
        _, endpoint, membership = self._parts()
        for member in membership.view().members:
            if member.node_id != self.node_id and member.transport_address:
                host, port = _split_address(member.transport_address)
                endpoint.add_peer(member.node_id, host, port)

    def _hosts_of(self, gid: int) -> set[int]:
        _, _, membership = self._parts()
        return {r.node_id for r in membership.locate(str(DataStructureId.from_int(gid)))}

    async def _watch_membership(self) -> None:
        _, endpoint, membership = self._parts()
        host = self._host
        async for event in membership.events():
            if isinstance(event, DirectoryChanged) and self._repair is not None:
                self._repair.poke()  # two groups under one id show in the directory
                continue
            _log_member_event(event)
            if isinstance(event, MemberLeft):
                self._creator().forget(event.member.node_id)
                if membership.address_of(event.member.node_id) is None:
                    # Left on purpose and not back under a new run: forget its address
                    # (a failed node keeps it; raft must reach it when it returns).
                    endpoint.remove_peer(event.member.node_id)
            if host is not None and isinstance(event, MemberFailed | MemberLeft):
                host.node_failed(event.member.node_id)
            elif host is not None and isinstance(event, MemberJoined | MemberRecovered):
                host.node_recovered(event.member.node_id)
                self._creator().note_members()
            try:
                self._sync_peers()
            except (CopyCatError, ValueError) as exc:
                log.warning("cannot update peer addresses: %s", exc)

    def _directory_id(self, gid: int) -> int:
        """The group id this node's member publishes in the directory: the group's
        incarnation when known (so two groups under one id show as two), else the
        legacy 63-bit form of the id."""
        host, _, _ = self._parts()
        rule = ReplicaRule.decode(host.group_meta(gid)) if gid in host.groups else None
        return rule.incarnation if rule is not None and rule.incarnation else _legacy_id(gid)

    def _publish(self, *, upsert: Sequence[int] = (), remove: Sequence[int] = ()) -> None:
        host, _, membership = self._parts()
        entries = []
        keys = []
        for gid in upsert:
            status = host.group_status(gid)
            if status is None:
                continue
            if status.subscribed:
                role = Role.INTERACTIVE
            elif self.node_id in status.learners:
                role = Role.LEARNER
            else:
                role = Role.VOTER
            ds = str(DataStructureId.from_int(gid))
            key = self._directory_id(gid)
            before = self._published.get(gid)
            if before is not None and before != key:
                keys.append((ds, before, self.node_id))  # the record learned its incarnation
            self._published[gid] = key
            entries.append(
                DirectoryEntry(
                    data_structure_id=ds, group_id=key, replica_id=self.node_id, role=role
                )
            )
        for gid in remove:
            ds = str(DataStructureId.from_int(gid))
            published = {self._published.pop(gid, _legacy_id(gid)), _legacy_id(gid)}
            keys.extend((ds, key, self.node_id) for key in published)
        if entries or keys:
            membership.publish(upsert=entries, remove=keys)

    def _incarnations(self, gid: int) -> dict[int, int]:
        """The incarnation each node's member of `gid` publishes (legacy entries left
        out: they prove nothing)."""
        _, _, membership = self._parts()
        legacy = _legacy_id(gid)
        return {
            r.node_id: r.group_id
            for r in membership.locate(str(DataStructureId.from_int(gid)))
            if r.group_id != legacy
        }

    def _on_split(self, gid: int, mine: int, others: dict[int, int]) -> None:
        """Two groups live under one id (`others`: nodes publishing another incarnation).
        Say so on this node's subscriber's `errors()` and in `groups()`; the younger group
        (the larger incarnation) refuses new writes from now on."""
        host, _, _ = self._parts()
        ds = DataStructureId.from_int(gid)
        younger = mine > min(others.values())
        nodes = ", ".join(str(n) for n in sorted(others))
        message = (
            f"{ds}: two raft groups exist under this id: this node's (incarnation {mine}) "
            f"and another on nodes {nodes}; "
            + (
                "this one is the younger and refuses new writes"
                if younger
                else "this one is the older and goes on; the younger refuses new writes"
            )
        )
        log.error("%s", message)
        error = SplitGroupError(ds, message)
        self._split_with[gid] = tuple(sorted(others))
        if younger:
            host.refuse_proposals(gid, error)
        sub = self._subscriptions.get(gid)
        if sub is not None:
            sub._report(error)

    # -- ids and allocation ----------------------------------------------------------------

    def new_data_structure_id(self) -> DataStructureId:
        """A new, unique data structure id (a ULID)."""
        world = self.world
        if world is REAL_WORLD:
            return DataStructureId.new()
        stamp = world.wall_ms() & ((1 << 48) - 1)
        return DataStructureId.from_int((stamp << 80) | int.from_bytes(world.random_bytes(10)))

    def _repairer(self) -> Repair:
        self._parts()
        assert self._repair is not None
        return self._repair

    def _tombstoned(self) -> Tombstones:
        self._parts()
        assert self._tombstones is not None
        return self._tombstones

    async def allocate_data_structure(
        self, *, replicas: int | None = None, data_center_replicas: int | None = None
    ) -> DataStructureId:
        """Start a new data structure's raft group of detached voters placed across data
        centers and racks, and return its id.

        With `replicas` given, exactly that many are placed, or `NotEnoughNodesError`
        names what was asked and what exists. Without it, the group gets
        `Config.replicas` or as many as the cluster has nodes, whichever is fewer (a
        single node works out of the box; the repair loop tops groups up as nodes join).
        A node told to join a cluster (`peers_to_contact`) that has reached nobody yet
        waits up to `proposal_timeout_s`, then raises `ClusterUnreachableError`.
        """
        return await self._creator().allocate(replicas, data_center_replicas)

    def _creator(self) -> Creation:
        self._parts()
        assert self._creation is not None
        return self._creation

    async def _call(
        self, node_id: int, method: str, body: bytes, *, timeout_s: float | None = None
    ) -> bytes:
        if node_id == self.node_id:
            raise CopyCatError("a node does not call itself")
        _, endpoint, membership = self._parts()
        # The view may list a node a moment before its event reaches `_watch_membership`
        # (which tells the endpoint every address): placement may pick it meanwhile.
        member = membership.view().member(node_id)
        if member is not None and member.transport_address:
            endpoint.add_peer(node_id, *_split_address(member.transport_address))
        return await endpoint.request(node_id, method, body, timeout_s=timeout_s)

    # -- removal of this node's member -------------------------------------------------------

    def _member_removed(self, gid: int, why: str) -> None:
        """This node's member of `gid` is no longer in the group (`why` says how that is
        known: from its own log, or from a proof by the group's leader). A detached
        replica is deleted and the id tombstoned; a subscription's member starts over
        empty and rejoins through the leader, its stream going on (see `_rejoin`)."""
        if self._closed:
            return
        host, _, _ = self._parts()
        status = host.group_status(gid)
        if status is None:
            return
        ds = DataStructureId.from_int(gid)
        sub = self._subscriptions.get(gid)
        if sub is None or self._leaving:
            if sub is not None:
                sub._detach()
            self._delete_replica(gid, tombstone=not status.blank)
            log.info("group %s: this node's replica was removed (%s); deleted here", ds, why)
            return
        if gid in self._rejoins:
            return
        log.warning("group %s: this node's member was removed (%s); rejoining", ds, why)
        self._tombstoned().add(gid, host.retired_state(gid))
        # The member keeps its log and raft state: the group may already have added this
        # node back (a later entry it has not applied yet), and acknowledgements it sent
        # before may still be on their way to the leader, which counts them. A member
        # that wiped its log under the same id would make those a lie (the leader would
        # count entries this node no longer holds). What it holds is a true prefix of
        # the group's log, which the leader extends or overwrites past the commit index.
        sub._report(
            BrokenError(
                f"{ds}: this node's member was removed from the group ({why}); it rejoins "
                "through the leader and the stream goes on (LOAD_SNAPSHOT if the leader "
                "fills it from a snapshot), nothing skipped or repeated"
            )
        )
        task = asyncio.get_running_loop().create_task(self._rejoin(gid, sub))
        self._rejoins[gid] = task
        task.add_done_callback(lambda _t: self._rejoins.pop(gid, None))

    async def _rejoin(self, gid: int, sub: Subscription) -> None:
        """Join group `gid` again as a learner for subscription `sub`, until it is a
        member or the subscription is closed, reporting each failed round on its
        `errors()`."""
        pause = max(1.0, self.config.tick_interval_s * 20)
        while not sub._closed and not self._closed:
            hosts = sorted(self._hosts_of(gid) - {self.node_id})
            if not hosts:
                hosts = await self._creator().ask_who_hosts(gid)
            if hosts:
                try:
                    # Its own configuration may still hold it (a removal learned from a
                    # proof): only the leader's answer counts here.
                    await self._join_as_learner(gid, hosts, trust_local_conf=False)
                    log.info("group %s: rejoined", DataStructureId.from_int(gid))
                    return
                except CopyCatError as exc:
                    sub._report(exc)
            await asyncio.sleep(pause)

    # -- disaster recovery -----------------------------------------------------------------

    async def recover(
        self, data_structure_id: DataStructureId | str, *, dry_run: bool = False
    ) -> RecoveryReport:
        """Rebuild a data structure's group from this node's member when the majority of
        its voters is gone for good (their disks lost): this member becomes the group's
        only voter, keeping every entry it has, and placement and repair add voters
        again up to the group's replica rule as nodes are there. The recovery is
        recorded in the group's log. Returns what was done and what may be lost.

        Raises `RecoveryRefusedError` (changing nothing) while the group has a leader, while
        a majority of its voters is reachable as far as this node can tell (gossip lists
        its node, or raft heard from it within `RECOVERY_HEARD_WITHIN_ELECTIONS` election
        timeouts), or when this node is no member of it; `GroupNotFoundError` when this
        node hosts none. With `dry_run` it only checks and reports.

        Dangerous by nature: a voter that is only cut off from this node and comes back
        with its data forks the history (docs/operations.md, "Disaster recovery")."""
        host, _, _ = self._parts()
        if self._leaving:
            raise CopyCatError("this node is leaving: it recovers nothing")
        ds = (
            data_structure_id
            if isinstance(data_structure_id, DataStructureId)
            else DataStructureId.parse(data_structure_id)
        )
        gid = ds.group_id
        host.group(gid)  # GroupNotFoundError when this node hosts no member
        assert self._recovery is not None
        report = await self._recovery.recover(gid, dry_run=dry_run)
        if report.recovered:
            log.warning("group %s recovered by force:\n%s", ds, report.describe())
            self._publish(upsert=[gid])
            self._repairer().poke()  # top up at the next scan, as nodes are there
        return report

    async def _serve_recover(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /recover (what `copycat recover` sends): {"data_structure_id": str,
        "confirm": bool}; without `"confirm": true` a dry run. Answers the report (200),
        or {"error": class name, "message", ...} with 409 for a refusal, 404 for a group
        not hosted here, 400 for a bad request."""
        ds = request.get("data_structure_id")
        if not isinstance(ds, str):
            return 400, {"error": "ArgumentError", "message": "data_structure_id is missing"}
        try:
            report = await self.recover(ds, dry_run=request.get("confirm") is not True)
        except RecoveryRefusedError as exc:
            return 409, {
                "error": type(exc).__name__,
                "message": str(exc),
                "reachable_voters": {str(k): v for k, v in exc.reachable_voters.items()},
                "leader_id": exc.leader_id,
            }
        except (GroupNotFoundError, InvalidIdError) as exc:
            code = 404 if isinstance(exc, GroupNotFoundError) else 400
            return code, {"error": type(exc).__name__, "message": str(exc)}
        except CopyCatError as exc:
            return 409, {"error": type(exc).__name__, "message": str(exc)}
        return 200, report.to_json()

    # -- graceful leave --------------------------------------------------------------------

    async def leave(self, timeout_s: float | None = None) -> None:
        """Hand every replica this node holds over to other nodes, then shut down.

        For each group where this node is a voter, a replacement chosen by placement
        (keeping the other voters) joins as a learner, is promoted once caught up, and
        then this node is removed. The change is driven by the group's leader: when that
        is this node, it first hands leadership to another voter (a lone voter first
        adds its replacement). Learner members (subscribers) are removed from their
        groups. Up to `copycat.host.LEAVE_CONCURRENCY` groups are handed over at once, and progress
        is logged. After `timeout_s` (default `DEFAULT_LEAVE_TIMEOUT_S`) the groups not
        handed over are logged by id, kept on disk, and the node shuts down anyway; the
        repair of the other nodes replaces it there after `repair_grace_s`. Groups
        handed over are deleted here. Subscriptions are closed."""
        with node_name_bound(self._label):
            await self._leave_now(timeout_s)

    async def _leave_now(self, timeout_s: float | None) -> None:
        host, _, _ = self._parts()
        if self._leaving:
            raise CopyCatError("this node is already leaving")
        self._leaving = True  # from now on, start_replica requests are refused
        limit_s = DEFAULT_LEAVE_TIMEOUT_S if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        repair = self._repairer()
        await repair.stop()
        total = len(host.groups)
        _, _, membership = self._parts()
        if total and not any(m.node_id != self.node_id for m in membership.view().members):
            log.warning(
                "leaving: no other node in the cluster can take the %d groups; they stay on "
                "this node's disk",
                total,
            )
            await self.shutdown()
            return
        log.info("leaving: handing %d groups over (within %.0f s)", total, limit_s)
        failed = await self._leaver().hand_over_all(deadline)
        if failed:
            log.warning(
                "leaving: %d groups could not be handed over in time and stay on this "
                "node's disk (the other nodes repair them after repair_grace_s): %s",
                len(failed),
                ", ".join(str(DataStructureId.from_int(g)) for g in sorted(failed)),
            )
        else:
            log.info("leaving: every group handed over")
        await self.shutdown()

    def _leaver(self) -> Leave:
        self._parts()
        assert self._leave is not None
        return self._leave

    def _drop_handed_over(self, gid: int) -> None:
        sub = self._subscriptions.get(gid)
        if sub is not None:
            sub._detach()
        self._delete_replica(gid)

    def _delete_replica(self, gid: int, *, tombstone: bool = True) -> None:
        """Delete this node's member of `gid`, tombstoned first (durably) with what it
        was, which a member of `gid` opened here again recalls (see `Tombstones`)."""
        host, _, _ = self._parts()
        if tombstone:
            self._tombstoned().add(gid, host.retired_state(gid))
        host.drop_group(gid)
        self._publish(remove=[gid])

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(
        self,
        data_structure_id: DataStructureId | str,
        snapshot_provider: SnapshotProvider,
    ) -> Subscription:
        """Join the data structure's group with an interactive member on this node (or
        attach to the member this node already hosts) and return the subscription.

        Subscribing to an id no live node hosts starts a new group for it, but only when
        this node can tell that nobody hosts it: it has reached its cluster, holds the
        directory of a majority of the nodes it knows, and a majority answered that they
        host no member; and never for an id this node hosted before. Otherwise it raises
        `ClusterUnreachableError` (after up to `proposal_timeout_s`): one group per id."""
        with node_name_bound(self._label):
            return await self._subscribe(data_structure_id, snapshot_provider)

    async def _subscribe(
        self, data_structure_id: DataStructureId | str, snapshot_provider: SnapshotProvider
    ) -> Subscription:
        host, _, _ = self._parts()
        if not callable(snapshot_provider):
            raise ArgumentError(
                "snapshot_provider must be a callable that returns the state as bytes "
                f"(sync or async), not {type(snapshot_provider).__name__}"
            )
        ds = (
            data_structure_id
            if isinstance(data_structure_id, DataStructureId)
            else DataStructureId.parse(data_structure_id)
        )
        gid = ds.group_id
        if gid in self._subscriptions:
            raise CopyCatError(f"{ds} already has a subscription on this node")
        if gid not in host.groups:
            hosts = await self._creator().find_or_start(ds)
            if self.node_id not in hosts:
                await self._join_as_learner(gid, hosts)
        feed = host.attach_feed(gid, snapshot_provider)
        sub = Subscription(self, ds, feed)
        self._subscriptions[gid] = sub
        self._publish(upsert=[gid])
        return sub

    async def _join_as_learner(
        self, gid: int, candidates: list[int], *, trust_local_conf: bool = True
    ) -> None:
        host, _, _ = self._parts()
        host.open_member(gid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.proposal_timeout_s
        queue = list(candidates)
        last_error: Exception | None = None
        while loop.time() < deadline:
            status = host.group_status(gid)
            if status is None:
                raise BrokenError(f"{group_name(gid)}: this node's member went away while joining")
            if trust_local_conf and (
                self.node_id in status.voters or self.node_id in status.learners
            ):
                return  # a member already (placement made this node a voter meanwhile)
            target = queue.pop(0) if queue else candidates[0]
            try:
                meta = await self._call(
                    target, Method.ADD_MEMBER, encode_ints(gid, self.node_id, 0)
                )
                if meta:  # the group's rule: incarnation and session limits included
                    host.open_member(gid, meta=meta)
                    self._publish(upsert=[gid])
                return
            except NotLeaderError as exc:
                last_error = exc
                if exc.leader_hint and exc.leader_hint != self.node_id:
                    queue.insert(0, exc.leader_hint)
                else:
                    await asyncio.sleep(self.config.tick_interval_s * 5)
            except (PeerUnreachableError, ProposalTimeoutError, CopyCatError) as exc:
                last_error = exc
                await asyncio.sleep(self.config.tick_interval_s * 5)
        raise BrokenError(f"could not join group {gid}") from last_error

    def _forget(self, gid: int) -> None:
        self._subscriptions.pop(gid, None)


class Subscription:
    """A subscriber's handle on one data structure: propose, commits, errors, snapshots;
    and, since reads of your own state are local and may be stale, `read_barrier` and
    `wait_delivered` (docs/index.md, "Reading")."""

    def __init__(self, node: CopyCat, ds: DataStructureId, feed: Feed) -> None:
        self._node = node
        self.data_structure_id = ds
        self._feed = feed
        self._session = Session(id=node.world.random_bytes(SESSION_ID_BYTES))
        self._errors: asyncio.Queue[CopyCatError | None] = asyncio.Queue(maxsize=1024)
        self._closed = False
        self._iterating = False
        feed.on_error = self._report

    async def propose(self, data: bytes, *, wait_delivered: bool = False) -> int:
        """Propose `data`; returns once it is committed (it then appears once in every
        subscriber's `commits()`), with its position: the raft index of the entry that
        carries it in the group's log (retries of the same proposal are dropped as
        duplicates; this is the one applied). Raises `ProposalTimeoutError` when the
        outcome is unknown after `proposal_timeout_s` (it is then delivered at most once).

        With `wait_delivered=True` it returns only once this subscription's `commits()`
        has delivered it too (`wait_delivered(position)`): read your own write from your
        state right after. That needs another task iterating `commits()`; from inside
        the loop over `commits()` it raises `CopyCatError` at once (it would wait
        forever), before proposing anything."""
        if self._closed:
            raise ClosedError("this subscription is closed")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ArgumentError(f"proposals are bytes, not {type(data).__name__}")
        if wait_delivered and self._feed.held_by_current_task():
            raise CopyCatError(
                "propose(wait_delivered=True) inside the loop over commits() would wait "
                "forever: the item this task holds is delivered only when it comes back for "
                "the next one. Propose from another task, or without wait_delivered"
            )
        host, _, _ = self._node._parts()
        observer = self._node._observer
        started = time.perf_counter()
        try:
            position = await host.propose(
                self.data_structure_id.group_id, self._session, bytes(data)
            )
        except ProposalTimeoutError:
            observer.proposals.labels("timeout").inc()
            raise
        except CopyCatError:
            observer.proposals.labels("failed").inc()
            raise
        observer.proposals.labels("ok").inc()
        observer.commit_latency.observe(time.perf_counter() - started)
        if wait_delivered:
            await self.wait_delivered(position)
        return position

    async def read_barrier(self, *, timeout_s: float | None = None) -> int:
        """Return once this subscription's `commits()` has delivered every entry
        committed before the call, with the position it waited for.

        Reads from your own state are local and may be stale (another node's write may
        be committed and not yet delivered here). After `await read_barrier()` your
        state holds at least every write whose `propose` returned before the call, on
        any node: a linearizable read. It costs one round trip to the group's leader
        (a ReadIndex, confirmed by a quorum of heartbeats; concurrent barriers share
        one round), then a wait for the local `commits()` to pass that position.
        "Delivered" means the task iterating `commits()` took the item at that position
        (or LOAD_SNAPSHOT of a snapshot at or past it) and came back for the next one.

        Waits up to `timeout_s` (None: `proposal_timeout_s`), retrying while the group
        has no leader, then raises `ReadTimeoutError`. Raises `ClosedError` once the
        subscription is closed, the group's error if its member here stops, and
        `CopyCatError` when called from inside the loop over `commits()` while that
        loop holds an item (it would wait forever)."""
        if self._closed:
            raise ClosedError("this subscription is closed")
        host, _, _ = self._node._parts()
        limit = self._limit(host.config.proposal_timeout_s, timeout_s)
        return await self._feed.read_barrier(limit)

    async def wait_delivered(self, position: int, *, timeout_s: float | None = None) -> None:
        """Return once this subscription's `commits()` has delivered `position` (a
        position `propose` returned): the task iterating `commits()` took that item and
        came back for the next one, so your state holds it. Entries with nothing to hand
        out (a duplicate, a leader's empty entry) pass with the items around them.

        Waits up to `timeout_s` (None: `proposal_timeout_s`), then raises
        `ReadTimeoutError`. Raises `ClosedError` once the subscription is closed, and
        `CopyCatError` when called from inside the loop over `commits()` while that loop
        holds an item (only its coming back delivers anything)."""
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ArgumentError(f"a position is an int >= 0, not {position!r}")
        if self._closed:
            raise ClosedError("this subscription is closed")
        host, _, _ = self._node._parts()
        limit = self._limit(host.config.proposal_timeout_s, timeout_s)
        await self._feed.wait_delivered(position, limit)

    @property
    def position(self) -> int:
        """The position (raft index) of the item `commits()` handed out last (for
        LOAD_SNAPSHOT, its snapshot's); 0 before the first."""
        return self._feed.handed

    @staticmethod
    def _limit(default_s: float, timeout_s: float | None) -> float:
        if timeout_s is None:
            return default_s
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s < 0:
            raise ArgumentError(f"timeout_s is a number of seconds >= 0, not {timeout_s!r}")
        return float(timeout_s)

    def commits(self) -> AsyncIterator[bytes | LoadSnapshot]:
        """Every committed proposal's bytes, in the group's order, exactly once; first
        `LOAD_SNAPSHOT` when the subscriber must load its state (`load_snapshot()`)."""
        if self._iterating:
            raise CopyCatError("commits() has one consumer per subscription")
        self._iterating = True
        return aiter(self._feed)

    async def errors(self) -> AsyncIterator[CopyCatError]:
        """Errors of this subscription that no call raised (a snapshot provider that
        failed, a group that stopped). Ends when the subscription closes."""
        while not self._closed:
            item = await self._errors.get()
            if item is None:
                return
            yield item

    def _report(self, error: CopyCatError) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._errors.put_nowait(error)

    async def load_snapshot(self) -> bytes:
        """The state to load after `LOAD_SNAPSHOT` (the provider's bytes of a member)."""
        data = self._feed.take_snapshot_bytes()
        if data is None:
            raise CopyCatError("no snapshot to load: wait for LOAD_SNAPSHOT in commits()")
        return data

    def _detach(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self._errors.put_nowait(None)  # ends errors()
            host = self._node._host
            if host is not None:
                host.detach_feed(self.data_structure_id.group_id)
            self._node._forget(self.data_structure_id.group_id)

    async def close(self) -> None:
        """Leave the group: the subscription stops, and the interactive member this node
        added for it is removed from the group and deleted here. A member that is a
        voter of the group (a detached replica placed on this node) stays."""
        if self._closed:
            return
        self._detach()
        node = self._node
        host, _, _membership = node._parts()
        gid = self.data_structure_id.group_id
        rejoin = node._rejoins.pop(gid, None)
        if rejoin is not None:
            rejoin.cancel()
        status = host.group_status(gid)
        if status is None or (node.node_id not in status.learners and not status.blank):
            node._publish(upsert=[gid])
            return
        leader = status.leader_id
        with contextlib.suppress(CopyCatError):
            if leader == node.node_id:
                await host.remove_member(gid, node.node_id)
            elif leader:
                await node._call(leader, Method.REMOVE_MEMBER, encode_ints(gid, node.node_id))
        node._delete_replica(gid)
