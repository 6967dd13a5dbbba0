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
import functools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgpack

from copycat._ids import DataStructureId
from copycat.errors import (
    BrokenError,
    ClosedError,
    CopyCatError,
    NotEnoughNodesError,
    NotLeaderError,
    PeerUnreachableError,
    ProposalTimeoutError,
)
from copycat.host import Host, LoadSnapshot, Session, decode_ints, encode_ints
from copycat.membership import (
    DirectoryEntry,
    MemberFailed,
    MemberInfo,
    MemberJoined,
    MemberLeft,
    MemberRecovered,
    Membership,
    Role,
)
from copycat.placement import NodeInfo, PlacementRule, Topology, place
from copycat.transport import Endpoint

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
    from pathlib import Path
    from types import TracebackType

    from copycat._config import Config
    from copycat.host import Feed, SnapshotProvider
    from copycat.storage import LogStore

log = logging.getLogger("copycat")

_CREATE_GROUP: Final = "copycat.create_group"
_START_REPLICA: Final = "copycat.start_replica"
_ADD_MEMBER: Final = "copycat.add_member"
_LOOKUP: Final = "copycat.lookup_group"
_IS_MEMBER: Final = "copycat.is_member"
_HAND_OVER: Final = "copycat.hand_over"

DEFAULT_LEAVE_TIMEOUT_S: Final = 120.0
"""How long `CopyCat.leave()` hands replicas over, when not told, before it gives up on
the groups left and shuts down anyway."""
LEAVE_CONCURRENCY: Final = 8
"""Groups `leave()` hands over at once."""
REPAIR_CONCURRENCY: Final = 16
"""Groups whose membership the repair scan changes at once (repair, top-up)."""
_RULE_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class ReplicaRule:
    """The replicas a group asks for, fixed for its life: `replicas` in total, over
    `data_center_replicas` data centers (None: as many as the cluster has)."""

    replicas: int
    data_center_replicas: int | None = None

    def encode(self) -> bytes:
        """The group metadata record (msgpack `[format, replicas, dc replicas or 0]`)."""
        packed: bytes = msgpack.packb([_RULE_FORMAT, self.replicas, self.data_center_replicas or 0])
        return packed

    @staticmethod
    def decode(data: bytes | None) -> ReplicaRule | None:
        """The rule of a metadata record; None for none, or one this code cannot read
        (such a group is never topped up)."""
        if not data:
            return None
        try:
            fmt, replicas, dc = msgpack.unpackb(data)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        if fmt != _RULE_FORMAT or not isinstance(replicas, int) or not isinstance(dc, int):
            return None
        if replicas < 1 or dc < 0:
            return None
        return ReplicaRule(replicas, dc or None)

    def ints(self) -> tuple[int, int]:
        """The rule as a control request carries it (0: no rule; no data center count)."""
        return self.replicas, self.data_center_replicas or 0

    @staticmethod
    def from_ints(replicas: int, dc: int) -> ReplicaRule | None:
        return ReplicaRule(replicas, dc or None) if replicas else None


def _load_node_id(path: Path, configured: int | None) -> int:
    """The node's id: configured, or generated once and kept in the data dir."""
    data_dir = path.parent
    if path.exists():
        stored = int(path.read_text().strip())
        if configured is not None and configured != stored:
            raise CopyCatError(
                f"the data dir {data_dir} belongs to node {stored}, not {configured}; "
                "use another data dir or the same node id"
            )
        return stored
    node_id = configured or (int.from_bytes(os.urandom(8), "big") >> 1) or 1
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{node_id}\n")
    os.replace(tmp, path)
    return node_id


def _directory_group_id(gid: int) -> int:
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


class CopyCat:
    """A CopyCat node. Use `async with CopyCat(config) as cc:`, or `start()` and
    `shutdown()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._started = False
        self._closed = False
        self.node_id = 0
        self._host: Host | None = None
        self._store: LogStore | None = None
        self._endpoint: Endpoint | None = None
        self._membership: Membership | None = None
        self._watch: asyncio.Task[None] | None = None
        self._repair: asyncio.Task[None] | None = None
        self._repair_tasks: set[asyncio.Task[None]] = set()
        self._repair_slots = asyncio.Semaphore(REPAIR_CONCURRENCY)
        self._missing_since: dict[int, float] = {}
        self._lonely_since: dict[int, float] = {}
        self._scanned_generation = -1
        self._scanned_at = 0.0
        self._repair_pending = False
        """A scan changed a group that may need more (a top-up one replica at a time)."""
        self._changing: set[int] = set()
        """Groups whose membership this node is changing (repair, top-up, hand-over)."""
        self._leaving = False
        self._subscriptions: dict[int, Subscription] = {}

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
        if self._started:
            raise CopyCatError("this node is already started")
        self._started = True
        try:
            await self._open()
        except BaseException:
            # Close whatever was opened (ports, the store's lock), then report the cause.
            await self._close_parts()
            self._closed = True
            raise

    async def _open(self) -> None:
        cfg = self.config
        self.node_id = _load_node_id(cfg.node_id_file, cfg.node_id)
        store = cfg.open_log_store()
        self._store = store
        endpoint = Endpoint(cfg.transport_config(self.node_id))
        await endpoint.start()
        self._endpoint = endpoint
        host = Host(cfg.host_config(self.node_id), store, endpoint)
        self._host = host
        endpoint.register_request_handler(_CREATE_GROUP, self._serve_create_group)
        endpoint.register_request_handler(_START_REPLICA, self._serve_start_replica)
        endpoint.register_request_handler(_LOOKUP, self._serve_lookup)
        endpoint.register_request_handler(_IS_MEMBER, self._serve_is_member)
        endpoint.register_request_handler(_HAND_OVER, self._serve_hand_over)
        membership = Membership(
            cfg.membership_config(self.node_id, transport_port=endpoint.address[1])
        )
        await membership.start()
        self._membership = membership
        await host.start()
        self._publish(upsert=list(host.groups))
        self._sync_peers()
        loop = asyncio.get_running_loop()
        self._watch = loop.create_task(self._watch_membership())
        self._repair = loop.create_task(self._repair_loop())

    async def shutdown(self) -> None:
        """Leave the cluster and stop. Subscriptions are closed (their members stay)."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._stop_repairs()
        for sub in list(self._subscriptions.values()):
            sub._detach()
        await self._close_parts()

    async def _close_parts(self) -> None:
        if self._host is not None:
            await self._host.close()
        if self._membership is not None:
            await self._membership.close(leave=True)
        if self._endpoint is not None:
            await self._endpoint.close()
        if self._store is not None:
            self._store.close()

    def _parts(self) -> tuple[Host, Endpoint, Membership]:
        if self._closed:
            raise ClosedError("this CopyCat node is shut down")
        if self._host is None or self._endpoint is None or self._membership is None:
            raise CopyCatError("start the node first: `async with CopyCat(config)`")
        return self._host, self._endpoint, self._membership

    # -- where this node is --------------------------------------------------------------

    @property
    def address(self) -> str:
        """This node's CopyCat transport address, "host:port" (the bound port when the
        config asked for port 0)."""
        _, endpoint, _ = self._parts()
        host, port = endpoint.address
        return f"{host}:{port}"

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
        for gid, group in sorted(host.groups.items()):
            raft = group.raw.status()
            conf = raft.conf_state
            ds = str(DataStructureId.from_int(gid))
            if group.feed is not None and not group.feed.closed:
                member = "subscriber"
            elif self.node_id in conf.learners:
                member = "learner"
            else:
                member = "voter"
            out.append(
                GroupInfo(
                    data_structure_id=ds,
                    member=member,
                    raft_role=raft.role.name.lower(),
                    leader_id=raft.leader_id,
                    term=raft.term,
                    commit=raft.commit,
                    applied=group.applied,
                    voters=tuple(sorted(conf.voters)),
                    learners=tuple(sorted(conf.learners)),
                    replicas_on=tuple(sorted({r.node_id for r in membership.locate(ds)})),
                )
            )
        return tuple(out)

    def counters(self) -> dict[str, int]:
        """The host's counters (cycles, entries persisted, messages, snapshots...) and
        the number of groups currently quiescent."""
        host, _, _ = self._parts()
        return {**host.counters, "quiescent_groups": host.quiescent_groups()}

    # -- peers -----------------------------------------------------------------------------

    def _sync_peers(self) -> None:
        _, endpoint, membership = self._parts()
        for member in membership.view().members:
            if member.node_id != self.node_id and member.transport_address:
                host, port = _split_address(member.transport_address)
                endpoint.add_peer(member.node_id, host, port)

    async def _watch_membership(self) -> None:
        _, _, membership = self._parts()
        host = self._host
        async for event in membership.events():
            if host is not None and isinstance(event, MemberFailed | MemberLeft):
                host.node_failed(event.member.node_id)
            elif host is not None and isinstance(event, MemberJoined | MemberRecovered):
                host.node_recovered(event.member.node_id)
            try:
                self._sync_peers()
            except (CopyCatError, ValueError) as exc:
                log.warning("cannot update peer addresses: %s", exc)

    def _publish(self, *, upsert: Sequence[int] = (), remove: Sequence[int] = ()) -> None:
        host, _, membership = self._parts()
        entries = []
        for gid in upsert:
            group = host.groups.get(gid)
            if group is None:
                continue
            cs = group.raw.conf_state()
            if group.feed is not None:
                role = Role.INTERACTIVE
            elif self.node_id in cs.learners:
                role = Role.LEARNER
            else:
                role = Role.VOTER
            entries.append(
                DirectoryEntry(
                    data_structure_id=str(DataStructureId.from_int(gid)),
                    group_id=_directory_group_id(gid),
                    replica_id=self.node_id,
                    role=role,
                )
            )
        keys = [
            (str(DataStructureId.from_int(gid)), _directory_group_id(gid), self.node_id)
            for gid in remove
        ]
        if entries or keys:
            membership.publish(upsert=entries, remove=keys)

    # -- ids and allocation ----------------------------------------------------------------

    def new_data_structure_id(self) -> DataStructureId:
        """A new, unique data structure id (a ULID)."""
        return DataStructureId.new()

    def _topology(self) -> Topology:
        _, _, membership = self._parts()
        return Topology.of(
            NodeInfo(node_id=m.node_id, data_center=m.data_center, rack=m.rack)
            for m in membership.view().members
        )

    async def allocate_data_structure(
        self, *, replicas: int | None = None, data_center_replicas: int | None = None
    ) -> DataStructureId:
        """Start a new data structure's raft group of detached voters placed across data
        centers and racks, and return its id.

        With `replicas` given, exactly that many are placed, or `NotEnoughNodesError`
        names what was asked and what exists. Without it, the group gets
        `Config.replicas` or as many as the cluster has nodes, whichever is fewer (a
        single node works out of the box; the repair loop tops groups up as nodes join).
        """
        topology = self._topology()
        asked = ReplicaRule(
            self.config.replicas if replicas is None else replicas, data_center_replicas
        )
        if replicas is None:
            replicas = max(1, min(self.config.replicas, len(topology.node_ids)))
        ds = self.new_data_structure_id()
        rule = PlacementRule(replicas=replicas, data_center_replicas=data_center_replicas)
        nodes = place(str(ds), topology, rule)
        await self._create_group(ds, list(nodes), asked)
        return ds

    async def _create_group(
        self, ds: DataStructureId, voters: list[int], rule: ReplicaRule
    ) -> None:
        """Start group `ds` on `voters` (the first creates it) with its replica rule.
        Control bodies: start_replica `(gid, replicas, dc replicas)`, create_group
        `(gid, replicas, dc replicas, *voters)`; dc replicas 0 means none asked."""
        host, _, _ = self._parts()
        gid = ds.group_id
        creator, others = voters[0], voters[1:]
        for node_id in others:
            if node_id == self.node_id:
                host.open_member(gid, meta=rule.encode())
                self._publish(upsert=[gid])
            else:
                await self._call(node_id, _START_REPLICA, encode_ints(gid, *rule.ints()))
        if creator == self.node_id:
            self._create_local(gid, voters, rule)
        else:
            await self._call(creator, _CREATE_GROUP, encode_ints(gid, *rule.ints(), *voters))

    def _create_local(self, gid: int, voters: list[int], rule: ReplicaRule | None) -> None:
        host, _, _ = self._parts()
        if gid not in host.groups or host.is_blank(gid):
            host.create_group(gid, voters, meta=None if rule is None else rule.encode())
            host.campaign(gid)
            self._publish(upsert=[gid])

    async def _call(
        self, node_id: int, method: str, body: bytes, *, timeout_s: float | None = None
    ) -> bytes:
        if node_id == self.node_id:
            raise CopyCatError("a node does not call itself")
        _, endpoint, _ = self._parts()
        return await endpoint.request(node_id, method, body, timeout_s=timeout_s)

    async def _serve_create_group(self, peer: int, body: bytes) -> bytes:
        values = decode_ints(body)
        if len(values) < 4:
            raise ValueError("create_group takes (group, replicas, dc replicas, *voters)")
        gid, rule, voters = values[0], ReplicaRule.from_ints(*values[1:3]), list(values[3:])
        if self.node_id not in voters:
            raise CopyCatError(f"node {self.node_id} is not among the voters {voters}")
        self._create_local(gid, voters, rule)
        return b""

    async def _serve_start_replica(self, peer: int, body: bytes) -> bytes:
        gid, replicas, dc = decode_ints(body, 3)
        if self._leaving:
            raise CopyCatError(f"node {self.node_id} is leaving the cluster")
        host, _, _ = self._parts()
        rule = ReplicaRule.from_ints(replicas, dc)
        host.open_member(gid, meta=None if rule is None else rule.encode())
        self._publish(upsert=[gid])
        return b""

    def _rule_of(self, gid: int) -> ReplicaRule | None:
        host, _, _ = self._parts()
        return ReplicaRule.decode(host.group_meta(gid))

    # -- repair ----------------------------------------------------------------------------

    async def _repair_loop(self) -> None:
        """Every second: groups this node leads replace voters that gossip has reported
        failed for `repair_grace_s` (one membership change at a time: the replacement
        joins as a learner, is promoted once caught up, then the dead voter is removed),
        and gain voters, one at a time, while they have fewer than their replica rule
        asks and placement can now give more (top-up); members this node hosts that
        cannot find a leader ask whether they are still members, dropping their replica
        when they are not (a node back from the dead)."""
        while True:
            await asyncio.sleep(max(1.0, self.config.tick_interval_s * 10))
            try:
                await self._repair_once()
            except (CopyCatError, OSError) as exc:
                log.warning("repair: %s", exc)

    async def _repair_once(self) -> None:
        host, _, membership = self._parts()
        loop = asyncio.get_running_loop()
        now = loop.time()
        view = membership.view()
        # Scanning every group costs with thousands of them: scan when membership
        # changed, while something is pending, and every 30 s as a safety net.
        if (
            view.generation == self._scanned_generation
            and not self._missing_since
            and not self._lonely_since
            and not self._repair_pending
            and now - self._scanned_at < 30.0
        ):
            return
        self._scanned_generation = view.generation
        self._scanned_at = now
        self._repair_pending = False
        live = {m.node_id for m in view.members}
        for node_id in list(self._missing_since):
            if node_id in live:
                del self._missing_since[node_id]
        for gid, group in list(host.groups.items()):
            raw = group.raw
            if raw.is_leader():
                self._lonely_since.pop(gid, None)
                await self._repair_group(gid, live, now)
            elif raw.leader_id == 0:
                since = self._lonely_since.setdefault(gid, now)
                if now - since >= self.config.repair_grace_s:
                    self._lonely_since[gid] = now
                    await self._drop_if_stale(gid)
            else:
                self._lonely_since.pop(gid, None)

    async def _repair_group(self, gid: int, live: set[int], now: float) -> None:
        host, _, _ = self._parts()
        if gid in self._changing:
            self._repair_pending = True
            return
        conf = host.groups[gid].raw.conf_state()
        if conf.is_joint():
            return
        dead = sorted(v for v in conf.voters if v not in live)
        for node_id in dead:
            self._missing_since.setdefault(node_id, now)
        expired = [v for v in dead if now - self._missing_since[v] >= self.config.repair_grace_s]
        # A failed node's learner (a subscriber that died with it) is only removed: the
        # leader would otherwise keep sending to it for the group's whole life.
        dead_learners = sorted(n for n in conf.learners if n not in live)
        for node_id in dead_learners:
            self._missing_since.setdefault(node_id, now)
        expired_learners = [
            n for n in dead_learners if now - self._missing_since[n] >= self.config.repair_grace_s
        ]
        ds = DataStructureId.from_int(gid)
        work: Callable[[], Awaitable[object]]
        if expired:
            log.info("group %s: replacing failed node %d", ds, expired[0])
            work = functools.partial(self._replace_voter, gid, expired[0], exclude=dead)
        elif expired_learners:
            log.info("group %s: removing the learner of failed node %d", ds, expired_learners[0])
            work = functools.partial(host.remove_member, gid, expired_learners[0])
            self._repair_pending = len(expired_learners) > 1
        elif not dead:
            newcomer = self._top_up_candidate(gid)
            if newcomer is None:
                return
            work = functools.partial(self._add_voter, gid, newcomer, self._rule_of(gid))
            self._repair_pending = True  # one voter at a time: look again next scan
        else:
            return
        await self._start_repair(gid, work)

    async def _start_repair(self, gid: int, work: Callable[[], Awaitable[object]]) -> None:
        """Run one group's membership change in the background, at most
        `REPAIR_CONCURRENCY` at once (the scan waits for a slot, not for the change):
        after a join or a failure, thousands of groups are not changed one by one. A
        failure is logged and the group is looked at again by the next scan."""
        await self._repair_slots.acquire()
        self._changing.add(gid)

        async def run() -> None:
            try:
                await work()
            except (CopyCatError, OSError) as exc:
                self._repair_pending = True
                log.warning("repair of group %s: %s", DataStructureId.from_int(gid), exc)

        def done(task: asyncio.Task[None]) -> None:
            # Runs for a task cancelled before it started too (shutdown, leave).
            self._repair_tasks.discard(task)
            self._changing.discard(gid)
            self._repair_slots.release()

        task = asyncio.get_running_loop().create_task(run())
        self._repair_tasks.add(task)
        task.add_done_callback(done)

    async def _stop_repairs(self) -> None:
        for task in [self._repair, *self._repair_tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._repair = None

    def _place(
        self,
        ds: DataStructureId,
        count: int,
        rule: ReplicaRule | None,
        *,
        exclude: Sequence[int] = (),
        current: Sequence[int] = (),
    ) -> tuple[int, ...]:
        """Placement of `count` replicas under the group's rule: its data center count
        when it has one (capped at `count`), else, or when that cannot be kept, spread
        as the view allows. Raises `NotEnoughNodesError`."""
        topology = self._topology()
        dc = None if rule is None else rule.data_center_replicas
        if dc is not None:
            try:
                return place(
                    str(ds),
                    topology,
                    PlacementRule(replicas=count, data_center_replicas=min(dc, count)),
                    exclude=exclude,
                    current=current,
                )
            except NotEnoughNodesError:
                pass
        return place(
            str(ds), topology, PlacementRule(replicas=count), exclude=exclude, current=current
        )

    async def _replace_voter(
        self, gid: int, victim: int, *, exclude: Sequence[int], remove: bool = True
    ) -> bool:
        """On the leader: bring in a replacement for voter `victim` (placement keeps the
        other voters and avoids `exclude` and the victim), then remove the victim. With
        `remove=False` only the replacement is added (a lone leader leaving). Returns
        whether a replacement was found (the victim is removed all the same)."""
        host, _, _ = self._parts()
        conf = host.group(gid).raw.conf_state()
        ds = DataStructureId.from_int(gid)
        others = [v for v in conf.voters if v != victim]
        rule = self._rule_of(gid)
        try:
            target = self._place(
                ds,
                max(1, len(conf.voters) if remove else len(others) + 1),
                rule,
                exclude=sorted({*exclude, victim}),
                current=others,
            )
        except NotEnoughNodesError as exc:
            if not remove:
                raise
            log.warning("group %s: no node can replace node %d: %s", ds, victim, exc)
            newcomers: list[int] = []
        else:
            newcomers = [n for n in target if n not in conf.voters]
        if newcomers:
            log.info("group %s: node %d takes the place of node %d", ds, newcomers[0], victim)
            await self._add_voter(gid, newcomers[0], rule)
        if remove:
            # Without a replacement the victim goes all the same: a group of the
            # survivors keeps quorum better than one that counts an absent node.
            await host.remove_member(gid, victim)
            log.info("group %s: removed node %d", ds, victim)
        return bool(newcomers)

    def _top_up_candidate(self, gid: int) -> int | None:
        """On the leader: the node to add as one more voter when the group has fewer
        than its rule asks and placement (keeping the voters) can give more now; None
        otherwise, and for a group without a stored rule."""
        host, _, _ = self._parts()
        rule = self._rule_of(gid)
        conf = host.group(gid).raw.conf_state()
        have = len(conf.voters)
        if rule is None or have >= rule.replicas:
            return None
        ds = DataStructureId.from_int(gid)
        for count in range(rule.replicas, have, -1):
            try:
                target = self._place(ds, count, rule, current=sorted(conf.voters))
            except NotEnoughNodesError:
                continue
            newcomers = [n for n in target if n not in conf.voters]
            if not newcomers:
                return None
            log.info(
                "group %s: topping up from %d to %d voters (asked %d): adding node %d",
                ds,
                have,
                have + 1,
                rule.replicas,
                newcomers[0],
            )
            return newcomers[0]
        return None

    async def _add_voter(self, gid: int, node_id: int, rule: ReplicaRule | None) -> None:
        """On the leader: start a member of `gid` on `node_id` (passing the group's rule
        on), add it as a learner, and promote it once it has caught up."""
        host, _, _ = self._parts()
        ints = (0, 0) if rule is None else rule.ints()
        if node_id == self.node_id:
            host.open_member(gid, meta=None if rule is None else rule.encode())
        else:
            # Also for an interactive learner already there: it learns the rule.
            await self._call(node_id, _START_REPLICA, encode_ints(gid, *ints))
        await host.add_member(gid, node_id, voter=False)
        await host.wait_caught_up(gid, node_id)
        await host.add_member(gid, node_id, voter=True)

    async def _drop_if_stale(self, gid: int) -> None:
        """Ask the group's other members whether this node is still a member; drop the
        replica when a leader says it is not."""
        host, _, membership = self._parts()
        ds = DataStructureId.from_int(gid)
        others = {r.node_id for r in membership.locate(str(ds))} | set(
            host.groups[gid].raw.conf_state().members()
        )
        others.discard(self.node_id)
        for node_id in sorted(others):
            try:
                reply = await self._call(node_id, _IS_MEMBER, encode_ints(gid, self.node_id))
            except CopyCatError:
                continue
            if reply == b"\x00":
                log.info("group %s: this node is no longer a member; dropping its replica", ds)
                host.drop_group(gid)
                self._publish(remove=[gid])
                return
            if reply == b"\x01":
                return

    async def _serve_is_member(self, peer: int, body: bytes) -> bytes:
        """b"\x01" member, b"\x00" not a member (answered by the leader only), b"" unknown."""
        gid, node_id = decode_ints(body, 2)
        host, _, _ = self._parts()
        group = host.groups.get(gid)
        if group is None or not group.raw.is_leader():
            return b""
        return b"\x01" if node_id in group.raw.conf_state().members() else b"\x00"

    # -- graceful leave --------------------------------------------------------------------

    async def leave(self, timeout_s: float | None = None) -> None:
        """Hand every replica this node holds over to other nodes, then shut down.

        For each group where this node is a voter, a replacement chosen by placement
        (keeping the other voters) joins as a learner, is promoted once caught up, and
        then this node is removed. The change is driven by the group's leader: when that
        is this node, it first hands leadership to another voter (a lone voter first
        adds its replacement). Learner members (subscribers) are removed from their
        groups. Up to `LEAVE_CONCURRENCY` groups are handed over at once, and progress
        is logged. After `timeout_s` (default `DEFAULT_LEAVE_TIMEOUT_S`) the groups not
        handed over are logged by id, kept on disk, and the node shuts down anyway; the
        repair of the other nodes replaces it there after `repair_grace_s`. Groups
        handed over are deleted here. Subscriptions are closed."""
        host, _, _ = self._parts()
        if self._leaving:
            raise CopyCatError("this node is already leaving")
        self._leaving = True  # from now on, start_replica requests are refused
        limit_s = DEFAULT_LEAVE_TIMEOUT_S if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        await self._stop_repairs()
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
        failed: list[int] = []
        progress = loop.create_task(self._log_leave_progress(total))
        try:
            semaphore = asyncio.Semaphore(LEAVE_CONCURRENCY)

            async def one(gid: int) -> None:
                async with semaphore:
                    if not await self._hand_over(gid, deadline):
                        failed.append(gid)

            # A second round takes the groups that arrived meanwhile (a start_replica
            # accepted just before leaving began).
            for _round in range(2):
                await asyncio.gather(*(one(gid) for gid in sorted(host.groups)))
                if not host.groups or failed or loop.time() >= deadline:
                    break
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
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

    async def _log_leave_progress(self, total: int) -> None:
        host = self._host
        while host is not None:
            await asyncio.sleep(5.0)
            log.info("leaving: %d of %d groups handed over", total - len(host.groups), total)

    async def _hand_over(self, gid: int, deadline: float) -> bool:
        """Get this node out of group `gid`, replaced, by `deadline`; True when done."""
        host, _, membership = self._parts()
        loop = asyncio.get_running_loop()
        ds = DataStructureId.from_int(gid)
        pause = self.config.tick_interval_s * 5
        blank_until = loop.time() + 2 * self.config.election_ticks * self.config.tick_interval_s
        last_error: Exception | None = None
        while loop.time() < deadline:
            group = host.groups.get(gid)
            if group is None:
                return True
            raw = group.raw
            conf = raw.conf_state()
            me = self.node_id
            try:
                if me not in conf.members():
                    if host.is_blank(gid) and loop.time() < blank_until:
                        # An empty member: a leader may be adding it right now (a
                        # start_replica accepted before the leave); give it a moment.
                        await asyncio.sleep(pause)
                        continue
                    # Removed already (a retry after a lost answer), or never filled.
                    self._drop_handed_over(gid)
                    return True
                if raw.is_leader():
                    live = {m.node_id for m in membership.view().members}
                    others = [v for v in conf.voters if v != me and v in live]
                    if conf.is_joint() or gid in self._changing:
                        await asyncio.sleep(pause)
                        continue
                    if not others:
                        # A lone voter: its replacement joins first, then leads.
                        self._changing.add(gid)
                        try:
                            await self._replace_voter(gid, me, exclude=(me,), remove=False)
                        finally:
                            self._changing.discard(gid)
                        continue
                    progress = raw.status().progress
                    to = max(others, key=lambda v: (progress[v].match if v in progress else 0, -v))
                    log.info("leaving: group %s: handing leadership to node %d", ds, to)
                    await host.transfer_leader(gid, to)
                    continue
                leader = raw.leader_id
                if not leader:
                    await asyncio.sleep(pause)
                    continue
                reply = await self._call(
                    leader,
                    _HAND_OVER,
                    encode_ints(gid, me),
                    timeout_s=max(1.0, deadline - loop.time()),
                )
                self._drop_handed_over(gid)
                if reply == b"\x00":
                    log.warning(
                        "leaving: group %s: no node could take this replica; the group "
                        "goes on with one voter less (topped up when a node joins)",
                        ds,
                    )
                else:
                    log.info("leaving: group %s handed over", ds)
                return True
            except asyncio.CancelledError:
                raise
            except (CopyCatError, ValueError, OSError) as exc:
                last_error = exc
                log.debug("leaving: group %s: %s; trying again", ds, exc)
                await asyncio.sleep(pause)
        log.warning("leaving: group %s not handed over: %s", ds, last_error)
        return False

    def _drop_handed_over(self, gid: int) -> None:
        host, _, _ = self._parts()
        sub = self._subscriptions.get(gid)
        if sub is not None:
            sub._detach()
        host.drop_group(gid)
        self._publish(remove=[gid])

    async def _serve_hand_over(self, peer: int, body: bytes) -> bytes:
        """On the leader of a group: node `leaving` goes. A voter is replaced first (as
        repair does, without waiting for any grace), a learner is just removed. Answers
        b"" when done, b"\x00" when done but no node could take the voter's place."""
        gid, leaving = decode_ints(body, 2)
        host, _, membership = self._parts()
        raw = host.group(gid).raw
        if not raw.is_leader():
            raise NotLeaderError(raw.leader_id or None)
        if leaving == self.node_id:
            raise CopyCatError("the leader does not hand itself over: transfer leadership first")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.proposal_timeout_s
        while gid in self._changing:
            if loop.time() > deadline:
                raise ProposalTimeoutError(f"group {gid}: another membership change is under way")
            await asyncio.sleep(self.config.tick_interval_s * 5)
        self._changing.add(gid)
        try:
            conf = raw.conf_state()
            if leaving not in conf.members():
                return b""
            if leaving not in conf.voters:
                await host.remove_member(gid, leaving)
                return b""
            live = {m.node_id for m in membership.view().members}
            dead = [v for v in conf.voters if v not in live]
            log.info("group %s: node %d leaves", DataStructureId.from_int(gid), leaving)
            replaced = await self._replace_voter(gid, leaving, exclude=dead)
        finally:
            self._changing.discard(gid)
        return b"" if replaced else b"\x00"

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(
        self,
        data_structure_id: DataStructureId | str,
        snapshot_provider: SnapshotProvider,
    ) -> Subscription:
        """Join the data structure's group with an interactive member on this node (or
        attach to the member this node already hosts) and return the subscription.
        Subscribing to an id no live node hosts starts a new group for it."""
        host, _, membership = self._parts()
        ds = (
            data_structure_id
            if isinstance(data_structure_id, DataStructureId)
            else DataStructureId.parse(data_structure_id)
        )
        gid = ds.group_id
        if gid in self._subscriptions:
            raise CopyCatError(f"{ds} already has a subscription on this node")
        if gid not in host.groups:
            await self._await_directory()
            hosts = [r.node_id for r in membership.locate(str(ds)) if r.node_id != self.node_id]
            if not hosts:
                # The directory may not have converged yet (an allocation a moment ago):
                # ask every live node before starting a group, never a second one.
                hosts = await self._ask_who_hosts(gid)
            if not hosts:
                hosts = await self._start_for_subscriber(ds)
            if self.node_id not in hosts:
                await self._join_as_learner(gid, hosts)
        feed = host.attach_feed(gid, snapshot_provider)
        sub = Subscription(self, ds, feed)
        self._subscriptions[gid] = sub
        self._publish(upsert=[gid])
        return sub

    async def _await_directory(self, timeout_s: float = 10.0) -> None:
        """Before deciding that nobody hosts a data structure: a node that was given
        peers waits (bounded) until it sees one, and until it holds the directory every
        member it sees advertises."""
        _, _, membership = self._parts()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            members = membership.view().members
            lonely = bool(self.config.peers_to_contact) and len(members) < 2
            behind = False
            for m in members:
                if m.node_id == self.node_id:
                    continue
                versions = membership.peer_directory_version(m.node_id)
                if versions is None or versions[0] < versions[1]:
                    behind = True
                    break
            if not lonely and not behind:
                return
            await asyncio.sleep(self.config.tick_interval_s)
        log.warning("the cluster view did not settle within %.0f s; going on", timeout_s)

    async def _ask_who_hosts(self, gid: int) -> list[int]:
        _, _, membership = self._parts()
        peers = [m.node_id for m in membership.view().members if m.node_id != self.node_id]

        async def ask(node_id: int) -> int | None:
            try:
                reply = await self._call(node_id, _LOOKUP, encode_ints(gid))
            except CopyCatError:
                return None
            return node_id if reply == b"\x01" else None

        answers = await asyncio.gather(*(ask(n) for n in peers))
        return [n for n in answers if n is not None]

    async def _serve_lookup(self, peer: int, body: bytes) -> bytes:
        (gid,) = decode_ints(body, 1)
        host, _, _ = self._parts()
        return b"\x01" if gid in host.groups else b"\x00"

    async def _start_for_subscriber(self, ds: DataStructureId) -> list[int]:
        """Start the group of an id nobody hosts, placed like an allocation with as many
        replicas as the cluster gives, and return its voters. Placement decides the
        creator, and creating is idempotent there, so two nodes subscribing to the same
        new id at once (with the same view) start one group, not two."""
        topology = self._topology()
        want = min(self.config.replicas, len(topology.node_ids))
        nodes = list(place(str(ds), topology, PlacementRule(replicas=want)))
        await self._create_group(ds, nodes, ReplicaRule(self.config.replicas))
        return nodes

    async def _join_as_learner(self, gid: int, candidates: list[int]) -> None:
        host, _, _ = self._parts()
        host.open_member(gid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.proposal_timeout_s
        queue = list(candidates)
        last_error: Exception | None = None
        while loop.time() < deadline:
            if self.node_id in host.group(gid).raw.conf_state().members():
                return  # a member already (placement made this node a voter meanwhile)
            target = queue.pop(0) if queue else candidates[0]
            try:
                await self._call(target, _ADD_MEMBER, encode_ints(gid, self.node_id, 0))
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
    """A subscriber's handle on one data structure: propose, commits, errors, snapshots."""

    def __init__(self, node: CopyCat, ds: DataStructureId, feed: Feed) -> None:
        self._node = node
        self.data_structure_id = ds
        self._feed = feed
        self._session = Session()
        self._errors: asyncio.Queue[CopyCatError | None] = asyncio.Queue(maxsize=1024)
        self._closed = False
        self._iterating = False
        feed.on_error = self._report

    async def propose(self, data: bytes) -> None:
        """Propose `data`; returns once it is committed (it then appears once in every
        subscriber's `commits()`). Raises `ProposalTimeoutError` when the outcome is
        unknown after `proposal_timeout_s` (it is then delivered at most once)."""
        if self._closed:
            raise ClosedError("this subscription is closed")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"proposals are bytes, not {type(data).__name__}")
        host, _, _ = self._node._parts()
        await host.propose(self.data_structure_id.group_id, self._session, bytes(data))

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
        group = host.groups.get(gid)
        if group is None or node.node_id not in group.raw.conf_state().learners:
            node._publish(upsert=[gid])
            return
        leader = group.raw.leader_id
        with contextlib.suppress(CopyCatError):
            if leader == node.node_id:
                await host.remove_member(gid, node.node_id)
            elif leader:
                await node._call(leader, "copycat.remove_member", encode_ints(gid, node.node_id))
        host.drop_group(gid)
        node._publish(remove=[gid])
