"""Group creation: one raft group per data structure id, ever.

What lives here: `Creation`, which knows whether this node has reached its cluster,
decides that nobody hosts an id before it starts a group for it, starts groups (an
allocation, or a subscriber's new id) with their rule, and serves the requests that
create and open members (`create_group`, `start_replica`, `lookup_group`). What must
not: placement arithmetic (`copycat.placement`), repair (`_repair`), the user's view.

The rules (docs/host.md, "Creation: one group per id"):
1. A node told to join a cluster (`peers_to_contact`) creates nothing until it has
   reached it: calls that would create wait up to `proposal_timeout_s`, then raise
   `ClusterUnreachableError`. Only an empty `peers_to_contact` starts a new cluster.
2. Before it decides that nobody hosts an id, a node holds the directory of a majority
   of the nodes it knows, and a majority of them answered that they host no member.
3. A node never creates a group for an id it hosted before (`Tombstones`).
4. The creator fixes the group's rule (incarnation, session limits) and its record is
   the group's: the other voters store what it answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from copycat._ids import DataStructureId
from copycat.errors import ClusterUnreachableError, CopyCatError, SplitGroupError
from copycat.host._control import Method, decode_lookup, encode_lookup
from copycat.host._host import decode_ints, encode_ints
from copycat.host._rule import RULE_INTS, ReplicaRule, new_incarnation
from copycat.placement import PlacementRule, place

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from copycat.host._host import Host
    from copycat.host._repair import Repair
    from copycat.host._tombstones import KnownNodes, Tombstones
    from copycat.membership import Membership

log = logging.getLogger("copycat")

DIRECTORY_WAIT_S: Final = 10.0
"""How long a node that is about to decide that nobody hosts an id waits for the
cluster's directory to settle."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreationConfig:
    node_id: int
    replicas: int
    proposal_timeout_s: float
    tick_interval_s: float
    peers_to_contact: tuple[str, ...]


class Creation:
    """Group creation for one node (see the module docstring for its rules)."""

    def __init__(
        self,
        config: CreationConfig,
        host: Host,
        repair: Repair,
        tombstones: Tombstones,
        *,
        known: KnownNodes | None = None,
        call: Callable[..., Awaitable[bytes]],
        membership: Membership,
        publish: Callable[[int], None],
        leaving: Callable[[], bool],
        random_bytes: Callable[[int], bytes] = os.urandom,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        new_id: Callable[[], DataStructureId] = DataStructureId.new,
    ) -> None:
        self._new_id = new_id
        self.config = config
        self._random_bytes = random_bytes
        self._wall_ms = wall_ms
        self.host = host
        self.repair = repair
        self.tombstones = tombstones
        self._call = call
        self._membership = membership
        self._publish = publish
        self._leaving = leaving
        self.cluster_seen = not config.peers_to_contact
        """Whether this node has reached the cluster it was told to join (always, for a
        node told to start one: an empty `peers_to_contact`)."""
        self.known: KnownNodes | set[int] = {config.node_id} if known is None else known
        """Nodes seen live (since the data dir was made, when durable), less those that
        left on purpose: the quorum a node needs to see before it decides that nobody
        hosts an id."""

    # -- the cluster -------------------------------------------------------------------------

    def note_members(self) -> None:
        """Remember the nodes seen live; the first other one means the cluster is
        reached (rule 1)."""
        me = self.config.node_id
        for member in self._membership.view().members:
            self.known.add(member.node_id)
            if member.node_id != me and not self.cluster_seen:
                self.cluster_seen = True
                log.info("reached the cluster (node %d answered)", member.node_id)

    def forget(self, node_id: int) -> None:
        """`node_id` left the cluster on purpose: it no longer counts in quorums."""
        if node_id != self.config.node_id:
            self.known.discard(node_id)

    async def need_cluster(self, what: str) -> None:
        """Wait (up to `proposal_timeout_s`) until this node has reached the cluster it
        was told to join; `ClusterUnreachableError` otherwise."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.proposal_timeout_s
        while not self.cluster_seen:
            if loop.time() >= deadline:
                raise ClusterUnreachableError(
                    f"{what}: none of peers_to_contact ({', '.join(cfg.peers_to_contact)}) "
                    f"answered within {cfg.proposal_timeout_s:.0f} s; this node creates "
                    "nothing until it reaches its cluster (check the addresses, the cluster "
                    "name and the gossip keys)"
                )
            await asyncio.sleep(cfg.tick_interval_s * 5)

    def _majority(self, count: int) -> bool:
        """Whether `count` nodes (this one included) are a majority of the known ones."""
        return count > len(self.known) // 2

    async def await_directory(self, what: str) -> None:
        """Wait (up to `DIRECTORY_WAIT_S`) until this node holds the directory every live
        member advertises, and that of a majority of the nodes it knows (itself
        included); else `ClusterUnreachableError` (rule 2)."""
        membership = self._membership
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DIRECTORY_WAIT_S
        while True:
            complete = 1
            behind: list[int] = []
            for m in membership.view().members:
                if m.node_id == self.config.node_id:
                    continue
                versions = membership.peer_directory_version(m.node_id)
                if versions is None or versions[0] < versions[1]:
                    behind.append(m.node_id)
                else:
                    complete += 1
            if not behind and self._majority(complete):
                return
            if loop.time() >= deadline:
                break
            await asyncio.sleep(self.config.tick_interval_s)
        if behind:
            # A live member whose directory is missing may be the one that hosts the id
            # (a group of one replica, reachable by gossip but not by this node: sim seed
            # 194 made a second group so). Going on would guess.
            raise ClusterUnreachableError(
                f"{what}: this node does not hold the directory of live nodes "
                f"{', '.join(map(str, sorted(behind)))} (unreachable from here?): one may "
                "host the id, so it creates nothing; retry once they are reachable"
            )
        raise ClusterUnreachableError(
            f"{what}: this node holds the directory of {complete} of the {len(self.known)} "
            "nodes it knows, not a majority: it cannot tell whether the id is hosted, so it "
            "creates nothing"
        )

    async def ask_who_hosts(self, gid: int, *, need_quorum: bool = False) -> list[int]:
        """The live nodes that host a member of `gid`, by asking each. With
        `need_quorum`, an empty answer counts only when a majority of the nodes this
        node knows answered (itself included): `ClusterUnreachableError` otherwise."""
        me = self.config.node_id
        peers = [m.node_id for m in self._membership.view().members if m.node_id != me]

        listed_by: list[int] = []

        async def ask(node_id: int) -> bool | None:
            try:
                reply = await self._call(node_id, Method.LOOKUP, encode_ints(gid))
                hosted, known, listed = decode_lookup(reply)
            except (CopyCatError, ValueError):
                return None
            # The nodes the peer knows count in this node's quorum too: a node new to
            # the cluster, or restarted, sees only those up now (sim seed 62).
            for other in known:
                self.known.add(other)
            if listed:
                listed_by.append(node_id)
            return hosted

        answers = await asyncio.gather(*(ask(n) for n in peers))
        hosts = [n for n, yes in zip(peers, answers, strict=True) if yes]
        answered = 1 + sum(a is not None for a in answers)
        ds = DataStructureId.from_int(gid)
        listed = bool(listed_by) or self._membership.ever_listed(str(ds))
        if need_quorum and not hosts and gid not in self.host.groups and listed:
            # It exists: its hosts are just starting (a concurrent creation, whose entry
            # reaches the directory a moment later), or out of sight (a group of one
            # replica behind a partition: sim seed 194 made a second group so).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DIRECTORY_WAIT_S
            while loop.time() < deadline:
                hosts = [r.node_id for r in self._membership.locate(str(ds)) if r.node_id != me]
                if hosts or gid in self.host.groups:
                    return hosts
                await asyncio.sleep(self.config.tick_interval_s)
            who = ", ".join(map(str, sorted(listed_by))) or "this node"
            raise ClusterUnreachableError(
                f"group {ds}: no live node hosts it, but {who} saw it hosted: it exists out "
                "of reach, so it is not created again; retry once its nodes are reachable"
            )
        if need_quorum and not hosts and not self._majority(answered):
            raise ClusterUnreachableError(
                f"group {DataStructureId.from_int(gid)}: {answered} of the {len(self.known)} "
                "nodes this node knows answered whether they host it, not a majority: it "
                "creates nothing"
            )
        return hosts

    # -- starting groups ---------------------------------------------------------------------

    async def allocate(
        self, replicas: int | None, data_center_replicas: int | None
    ) -> DataStructureId:
        """A new data structure's group of detached voters (see
        `CopyCat.allocate_data_structure`)."""
        await self.need_cluster("allocate_data_structure")
        topology = self.repair.topology()
        asked = ReplicaRule(
            self.config.replicas if replicas is None else replicas, data_center_replicas
        )
        if replicas is None:
            replicas = max(1, min(self.config.replicas, len(topology.node_ids)))
        ds = self._new_id()
        rule = PlacementRule(replicas=replicas, data_center_replicas=data_center_replicas)
        await self.create_group(ds, list(place(str(ds), topology, rule)), asked)
        return ds

    async def find_or_start(self, ds: DataStructureId) -> list[int]:
        """The nodes hosting `ds`'s group, starting the group when nobody does (rules 1
        to 3); this node may be among them."""
        gid = ds.group_id
        me = self.config.node_id
        await self.need_cluster(f"subscribe({ds})")
        await self.await_directory(f"subscribe({ds})")
        hosts = [r.node_id for r in self._membership.locate(str(ds)) if r.node_id != me]
        if not hosts:
            # The directory may not have converged yet (an allocation a moment ago):
            # ask every live node before starting a group, never a second one.
            hosts = await self.ask_who_hosts(gid, need_quorum=True)
        if hosts:
            return hosts
        log.debug(
            "subscribe(%s): no node hosts it; this node knows %s and sees %s",
            ds,
            sorted(self.known),
            sorted(m.node_id for m in self._membership.view().members),
        )
        if gid in self.tombstones:
            raise ClusterUnreachableError(
                f"subscribe({ds}): no live node hosts it, and this node hosted it before, so "
                "it is not created again (its group may live on nodes out of reach); retry "
                "once they are back"
            )
        # Placement decides the creator, and creating is idempotent there: two nodes
        # subscribing to the same new id at once (with the same view) start one group.
        topology = self.repair.topology()
        want = min(self.config.replicas, len(topology.node_ids))
        nodes = list(place(str(ds), topology, PlacementRule(replicas=want)))
        await self.create_group(ds, nodes, ReplicaRule(self.config.replicas))
        return nodes

    async def create_group(self, ds: DataStructureId, voters: list[int], rule: ReplicaRule) -> None:
        """Start group `ds` on `voters` (the first creates it) with its rule. The other
        voters open empty members first (so the first election finds them), then the
        creator bootstraps the group and answers with its metadata record, which the
        others then store (rule 4): the creator's incarnation is the group's, even when
        two subscribers start the same new id at once (the second creation is a no-op
        there and answers the first one's record)."""
        gid = ds.group_id
        stamped = self._stamped(rule)
        plain = dataclasses.replace(stamped, incarnation=0)
        creator, others = voters[0], voters[1:]
        await self._start_replicas(gid, others, plain)
        if creator == self.config.node_id:
            meta = self.create_local(gid, voters, stamped)
        else:
            meta = await self._call(
                creator, Method.CREATE_GROUP, encode_ints(gid, *stamped.ints(), *voters)
            )
        final = ReplicaRule.decode(meta)
        if final is not None and final.incarnation:
            await self._start_replicas(gid, others, final)

    async def _start_replicas(self, gid: int, nodes: Sequence[int], rule: ReplicaRule) -> None:
        for node_id in nodes:
            if node_id == self.config.node_id:
                self.host.open_member(gid, meta=rule.encode())
                self._publish(gid)
            else:
                await self._call(node_id, Method.START_REPLICA, encode_ints(gid, *rule.ints()))

    def create_local(self, gid: int, voters: list[int], rule: ReplicaRule | None) -> bytes:
        """Bootstrap group `gid` here, unless this node has (or had) a member with state:
        a group is created once, and never again under the same id (rule 3). Returns the
        group's metadata record as stored here."""
        host = self.host
        if gid in self.tombstones:
            raise CopyCatError(
                f"group {DataStructureId.from_int(gid)} was hosted on node "
                f"{self.config.node_id} before: it is never created again here (it may live "
                "on elsewhere)"
            )
        status = host.group_status(gid)
        if status is None or status.blank:
            host.create_group(gid, voters, meta=None if rule is None else rule.encode())
            host.campaign(gid)
            self._publish(gid)
        return host.group_meta(gid) or b""

    def _stamped(self, rule: ReplicaRule) -> ReplicaRule:
        """`rule` with what the creator fixes for the group's life: a new incarnation
        and this node's session table limits."""
        cfg = self.host.config
        return dataclasses.replace(
            rule,
            incarnation=new_incarnation(
                self._wall_ms(), int.from_bytes(self._random_bytes(2), "big") >> 1
            ),
            session_ttl_entries=cfg.session_ttl_entries,
            max_sessions=cfg.max_sessions,
        )

    # -- request handlers --------------------------------------------------------------------

    async def serve_create_group(self, peer: int, body: bytes) -> bytes:
        values = decode_ints(body)
        if len(values) < 2 + RULE_INTS:
            raise ValueError("create_group takes (group, *rule, *voters)")
        split = 1 + RULE_INTS
        gid, rule, voters = values[0], ReplicaRule.from_ints(*values[1:split]), list(values[split:])
        if self.config.node_id not in voters:
            raise CopyCatError(f"node {self.config.node_id} is not among the voters {voters}")
        return self.create_local(gid, voters, rule)

    async def serve_start_replica(self, peer: int, body: bytes) -> bytes:
        gid, *rule_ints = decode_ints(body, 1 + RULE_INTS)
        me = self.config.node_id
        if self._leaving():
            raise CopyCatError(f"node {me} is leaving the cluster")
        host = self.host
        rule = ReplicaRule.from_ints(*rule_ints)
        held = ReplicaRule.decode(host.group_meta(gid)) if gid in host.groups else None
        if rule and held and rule.incarnation and held.incarnation not in (0, rule.incarnation):
            ds = DataStructureId.from_int(gid)
            raise SplitGroupError(
                ds,
                f"node {me} hosts a member of another group under {ds} (incarnation "
                f"{held.incarnation}, not {rule.incarnation}): it joins neither's log to the "
                "other's",
            )
        host.open_member(gid, meta=None if rule is None else rule.encode())
        self._publish(gid)
        return b""

    async def serve_lookup(self, peer: int, body: bytes) -> bytes:
        (gid,) = decode_ints(body, 1)
        listed = self._membership.ever_listed(str(DataStructureId.from_int(gid)))
        return encode_lookup(gid in self.host.groups, self.known, listed=listed)
