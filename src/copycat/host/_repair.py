"""Replica repair and top-up: the leader of each group keeps it at its replica rule.

What lives here: `Repair`, the loop that, on the groups this node leads, replaces voters
that are gone (on evidence) and tops groups up as nodes join; and the check by which a
member that hears from no leader learns whether it was removed (from a proof, never
from hearsay). What must not: placement arithmetic (`copycat.placement`), raft logic
(`copycat.raft`), the user's view (`copycat`).

The rules (docs/host.md, "Repair"):
1. A voter is replaced only when all three hold: gossip has reported its node failed for
   `repair_grace_s`, this leader has heard no raft message of the group from it for as
   long while ticking, and placement finds a replacement. A failure alone never shrinks
   a group, and gossip's word alone (hearsay) never replaces a voter: a leader does not
   quiesce while a member's node is reported failed or missing from the view, so its
   heartbeats keep asking, and a quiescent group's silence counts for nothing.
2. The replacement joins as a learner, is promoted once it holds everything committed,
   and only then is the failed voter removed (one membership change at a time).
3. A learner (a subscriber's member) is never removed because its node is unreachable:
   only its own `close()` or `leave()` removes it.
4. A group with fewer voters than its rule gains one at a time while placement can give
   more (top-up).
5. A member that has heard from no leader for `repair_grace_s` asks the group's other
   members for a proof of the configuration: only the group's leader, in a term at least
   the member's own, having committed an entry of that term and applied everything
   committed, gives one. A proof that leaves the member out means it was removed. A
   member that applies its own removal asks for a proof too before it goes: a member
   removed while cut off and added back since may apply the removal before its return
   reaches it, having acknowledged entries past its return already.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from copycat._ids import DataStructureId, group_name
from copycat.errors import CopyCatError, NotEnoughNodesError
from copycat.host._control import Method, decode_proof, encode_proof
from copycat.host._host import decode_ints, encode_ints
from copycat.host._rule import RULE_INTS, ReplicaRule
from copycat.placement import NodeInfo, PlacementRule, Topology, place

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from copycat.host._host import GroupStatus, Host
    from copycat.membership import View

log = logging.getLogger("copycat.repair")

REPAIR_CONCURRENCY: Final = 16
"""Groups whose membership the repair scan changes at once (repair, top-up)."""
FULL_SCAN_EVERY_S: Final = 30.0
"""A scan of every group runs at least this often, even when nothing seems pending."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairConfig:
    node_id: int
    repair_grace_s: float
    scan_interval_s: float
    replicas: int


class Repair:
    """The repair loop of one node (see the module docstring for its rules)."""

    def __init__(
        self,
        config: RepairConfig,
        host: Host,
        *,
        call: Callable[[int, str, bytes], Awaitable[bytes]],
        view: Callable[[], View],
        locate: Callable[[int], set[int]],
        publish: Callable[[int], None],
        on_removed: Callable[[int, str], None],
        incarnations: Callable[[int], dict[int, int]] = lambda gid: {},
        on_split: Callable[[int, int, dict[int, int]], None] = lambda gid, mine, others: None,
    ) -> None:
        self.config = config
        self.host = host
        self._call = call
        self._view = view
        self._locate = locate
        self._publish = publish
        self._on_removed = on_removed
        self._incarnations = incarnations
        self._on_split = on_split
        self._splits: dict[int, frozenset[tuple[int, int]]] = {}
        """Groups seen split, with what was seen (reported again only when it changes)."""
        self.changing: set[int] = set()
        """Groups whose membership this node is changing (repair, top-up, hand-over)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(REPAIR_CONCURRENCY)
        self._confirming: set[int] = set()
        """Groups whose member applied its own removal and waits for a proof of it."""
        self._missing_since: dict[int, float] = {}
        self._lonely_since: dict[int, float] = {}
        self._unreplaceable: set[tuple[int, int]] = set()
        """(group, voter) pairs already logged as having no replacement."""
        self._scanned_generation = -1
        self._scanned_at = 0.0
        self._wake_at = 0.0
        """Loop time by which a scan has due work though nothing changed (`_next_due`)."""
        self._pending = False
        """A scan changed a group that may need more (a top-up one replica at a time)."""
        self._loop_task: asyncio.Task[None] | None = None
        self.counters = {"voters_added": 0, "voters_removed": 0}
        """Membership changes this node's repair made as a leader (top-ups included)."""

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop and every change under way (they are retried by the next leader
        or scan: each step is idempotent)."""
        for task in [self._loop_task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop_task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.scan_interval_s)
            try:
                await self.scan()
            except (CopyCatError, OSError) as exc:
                log.warning("repair: %s", exc)

    # -- the scan ---------------------------------------------------------------------------

    async def scan(self) -> None:
        """One pass over the groups hosted here (rules 1 to 5)."""
        host = self.host
        now = asyncio.get_running_loop().time()
        view = self._view()
        # Scanning every group costs with thousands of them: scan when membership
        # changed, while something is pending, and every FULL_SCAN_EVERY_S anyway.
        if (
            view.generation == self._scanned_generation
            and not self._pending
            and now < self._wake_at
            and now - self._scanned_at < FULL_SCAN_EVERY_S
        ):
            return
        self._scanned_generation = view.generation
        self._scanned_at = now
        self._pending = False
        live = set(view.node_ids)
        for node_id in list(self._missing_since):
            if node_id in live:
                del self._missing_since[node_id]
                self._unreplaceable = {p for p in self._unreplaceable if p[1] != node_id}
        for gid in list(host.groups):
            status = host.group_status(gid)
            if status is None:
                continue
            self._check_split(gid)
            if status.is_leader:
                self._lonely_since.pop(gid, None)
                await self._repair_group(gid, live, now)
            elif self._quiet(status):
                since = self._lonely_since.setdefault(gid, now)
                if now - since >= self.config.repair_grace_s:
                    self._lonely_since[gid] = now
                    await self.check_membership(gid)
            else:
                self._lonely_since.pop(gid, None)
        self._wake_at = self._next_due(now)

    def _next_due(self, now: float) -> float:
        """When the next scan has work even if nothing changes: a lonely member's or a
        missing voter's grace running out; while a voter is past its grace (waiting
        for raft's silence to match, or for a slot), a tenth of the grace later."""
        grace = self.config.repair_grace_s
        due = [since + grace for since in self._lonely_since.values()]
        due.extend(
            since + grace if since + grace > now else now + grace / 10
            for since in self._missing_since.values()
        )
        return min(due, default=now + FULL_SCAN_EVERY_S)

    def poke(self) -> None:
        """Scan at the next tick (the directory changed: a split may show)."""
        self._pending = True

    def _check_split(self, gid: int) -> None:
        """Two groups under one id show in the directory as two incarnations (each
        member publishes its group's); call `on_split` once per new sighting. Members
        without a known incarnation (groups created before incarnations) prove nothing."""
        rule = self.rule_of(gid)
        if rule is None or not rule.incarnation:
            return
        others = {
            node: inc
            for node, inc in self._incarnations(gid).items()
            if inc != rule.incarnation and node != self.config.node_id
        }
        seen = frozenset(others.items())
        if not others:
            self._splits.pop(gid, None)
            return
        if self._splits.get(gid) == seen:
            return
        self._splits[gid] = seen
        self._on_split(gid, rule.incarnation, others)

    def _other_group(self, gid: int) -> list[int]:
        """Nodes seen hosting another group under the same id: never placed in this one
        (their member belongs to the other group; adding it would merge two logs)."""
        return sorted(node for node, _ in self._splits.get(gid, ()))

    def _quiet(self, status: GroupStatus) -> bool:
        """Whether a member should ask if it is still one (rule 5): it knows no leader,
        or it serves a subscriber and has heard nothing from its leader for the grace (a
        removed member that believes its old leader alive goes quiescent and would wait
        forever; an idle detached member is left alone, which keeps idle groups free)."""
        if status.leader_id == 0:
            return True
        return (
            status.subscribed
            and self.host.silent_for(status.gid, status.leader_id) >= self.config.repair_grace_s
        )

    async def _repair_group(self, gid: int, live: set[int], now: float) -> None:
        host = self.host
        if gid in self.changing:
            self._pending = True
            return
        conf = host.groups[gid].raw.conf_state()
        if conf.is_joint():
            return
        grace = self.config.repair_grace_s
        dead = sorted(v for v in conf.voters if v not in live)
        for node_id in dead:
            self._missing_since.setdefault(node_id, now)
            host.node_missing(node_id)  # keeps the group awake: its heartbeats ask
        # Rule 1: gossip and this leader's own raft traffic must both say it is gone.
        expired = [
            v
            for v in dead
            if now - self._missing_since[v] >= grace and host.unheard_for(gid, v) >= grace
        ]
        work: Callable[[], Awaitable[object]]
        if expired:
            victim = expired[0]
            if (gid, victim) in self._unreplaceable and not self._placement_changed(gid, victim):
                return
            work = functools.partial(self.replace_voter, gid, victim, exclude=dead)
        elif not dead:
            newcomer = self._top_up_candidate(gid)
            if newcomer is None:
                return
            work = functools.partial(self.add_voter, gid, newcomer, self.rule_of(gid))
            self._pending = True  # one voter at a time: look again next scan
        else:
            return
        await self._start(gid, work)

    def _placement_changed(self, gid: int, victim: int) -> bool:
        """Whether a replacement for `victim` can be found now (after one could not)."""
        try:
            return bool(self._newcomers(gid, victim, exclude=()))
        except NotEnoughNodesError:
            return False

    async def _start(self, gid: int, work: Callable[[], Awaitable[object]]) -> None:
        """Run one group's membership change in the background, at most
        `REPAIR_CONCURRENCY` at once (the scan waits for a slot, not for the change). A
        failure is logged and the group is looked at again by the next scan."""
        await self._slots.acquire()
        self.changing.add(gid)

        async def run() -> None:
            try:
                await work()
            except (CopyCatError, OSError) as exc:
                self._pending = True
                log.warning("repair of group %s: %s", DataStructureId.from_int(gid), exc)

        def done(task: asyncio.Task[None]) -> None:
            # Runs for a task cancelled before it started too (shutdown, leave).
            self._tasks.discard(task)
            self.changing.discard(gid)
            self._slots.release()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(done)

    # -- placement --------------------------------------------------------------------------

    def rule_of(self, gid: int) -> ReplicaRule | None:
        return ReplicaRule.decode(self.host.group_meta(gid))

    def topology(self) -> Topology:
        return Topology.of(
            NodeInfo(node_id=m.node_id, data_center=m.data_center, rack=m.rack)
            for m in self._view().members
        )

    def place(
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
        topology = self.topology()
        dc = None if rule is None else rule.data_center_replicas
        if dc is not None:
            with contextlib.suppress(NotEnoughNodesError):
                return place(
                    str(ds),
                    topology,
                    PlacementRule(replicas=count, data_center_replicas=min(dc, count)),
                    exclude=exclude,
                    current=current,
                )
        return place(
            str(ds), topology, PlacementRule(replicas=count), exclude=exclude, current=current
        )

    def _newcomers(self, gid: int, victim: int, *, exclude: Sequence[int]) -> list[int]:
        """Nodes placement would bring in to take `victim`'s place (best first)."""
        conf = self.host.group(gid).raw.conf_state()
        others = [v for v in conf.voters if v != victim]
        target = self.place(
            DataStructureId.from_int(gid),
            max(1, len(others) + 1),
            self.rule_of(gid),
            exclude=sorted({*exclude, victim, *self._other_group(gid)}),
            current=others,
        )
        return [n for n in target if n not in conf.voters]

    # -- membership changes ------------------------------------------------------------------

    async def replace_voter(
        self,
        gid: int,
        victim: int,
        *,
        exclude: Sequence[int],
        shrink: bool = False,
        remove: bool = True,
    ) -> bool:
        """On the leader: bring in a replacement for voter `victim` (placement keeps the
        other voters and avoids `exclude` and the victim), catch it up, promote it, and
        only then remove the victim (rule 2). Without a replacement the victim stays,
        unless `shrink` (a node leaving on purpose), and False is returned. With
        `remove=False` only the replacement is added (a lone voter leaving: it hands
        leadership over next), and `NotEnoughNodesError` says when there is none."""
        ds = DataStructureId.from_int(gid)
        try:
            newcomers = self._newcomers(gid, victim, exclude=exclude)
        except NotEnoughNodesError as exc:
            if not remove:
                raise
            newcomers = []
            reason = str(exc)
        else:
            reason = "placement finds no other node"
        if not remove:
            if not newcomers:
                raise NotEnoughNodesError(1, 0)
            await self.add_voter(gid, newcomers[0], self.rule_of(gid))
            return True
        if newcomers:
            log.info("group %s: node %d takes the place of node %d", ds, newcomers[0], victim)
            await self.add_voter(gid, newcomers[0], self.rule_of(gid))
        elif not shrink:
            if (gid, victim) not in self._unreplaceable:
                self._unreplaceable.add((gid, victim))
                log.warning(
                    "group %s: node %d is gone but no node can replace it (%s); it stays a "
                    "voter until a node joins or it returns",
                    ds,
                    victim,
                    reason,
                )
            return False
        await self.host.remove_member(gid, victim)
        self.counters["voters_removed"] += 1
        log.info("group %s: removed node %d", ds, victim)
        return bool(newcomers)

    def _top_up_candidate(self, gid: int) -> int | None:
        """On the leader: the node to add as one more voter when the group has fewer
        than its rule asks and placement (keeping the voters) can give more now; None
        otherwise, and for a group without a stored rule."""
        rule = self.rule_of(gid)
        conf = self.host.group(gid).raw.conf_state()
        have = len(conf.voters)
        if rule is None or have >= rule.replicas:
            return None
        ds = DataStructureId.from_int(gid)
        for count in range(rule.replicas, have, -1):
            try:
                target = self.place(
                    ds, count, rule, current=sorted(conf.voters), exclude=self._other_group(gid)
                )
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

    async def add_voter(self, gid: int, node_id: int, rule: ReplicaRule | None) -> None:
        """On the leader: start a member of `gid` on `node_id` (passing the group's rule
        on), add it as a learner, and promote it once it has caught up."""
        host = self.host
        ints = (0,) * RULE_INTS if rule is None else rule.ints()
        if node_id == self.config.node_id:
            host.open_member(gid, meta=None if rule is None else rule.encode())
            self._publish(gid)
        else:
            # Also for an interactive learner already there: it learns the rule.
            await self._call(node_id, Method.START_REPLICA, encode_ints(gid, *ints))
        await host.add_member(gid, node_id, voter=False)
        await host.wait_caught_up(gid, node_id)
        await host.add_member(gid, node_id, voter=True)
        self.counters["voters_added"] += 1

    # -- removal, learned from a proof -------------------------------------------------------

    async def check_membership(self, gid: int) -> bool | None:
        """Rule 5: ask the group's other members for a proof of its configuration. True
        when one proves this node a member, False when one proves it is not (then
        `on_removed` has been called), None when nobody could prove anything."""
        host = self.host
        me = self.config.node_id
        group = host.groups.get(gid)
        if group is None:
            return None
        my_term = host.term_of(gid)
        others = self._locate(gid) | set(group.raw.conf_state().members())
        others.discard(me)
        for node_id in sorted(others):
            try:
                reply = await self._call(node_id, Method.MEMBERSHIP_PROOF, encode_ints(gid))
                proof = decode_proof(reply)
            except (CopyCatError, ValueError) as exc:
                log.debug("%s: no proof from node %d: %s", group_name(gid), node_id, exc)
                continue
            if proof is None or proof.term < my_term:
                continue  # not the leader, not provably current, or from an older term
            if host.groups.get(gid) is not group:
                return None  # dropped or rebuilt meanwhile
            if proof.holds(me):
                return True
            ds = DataStructureId.from_int(gid)
            log.info(
                "group %s: the leader (node %d, term %d) proves this node is no longer a member",
                ds,
                node_id,
                proof.term,
            )
            self._on_removed(gid, f"the leader, node {node_id}, proved it in term {proof.term}")
            return False
        return None

    def applied_own_removal(self, gid: int) -> None:
        """The host saw this node's member of `gid` apply its own removal (rule 5): it
        goes once the group's leader proves it is out, asked again every grace until a
        proof settles it. Its log alone may be behind: deleting a member the leader
        added back, and has had entries acknowledged by, would leave the leader
        counting entries that nobody holds any more."""
        if gid in self._confirming:
            return
        self._confirming.add(gid)

        async def confirm() -> None:
            try:
                group = self.host.groups.get(gid)
                while group is not None and not group.member:
                    if await self.check_membership(gid) is not None:
                        return
                    await asyncio.sleep(self.config.repair_grace_s)
                    group = self.host.groups.get(gid)
            finally:
                self._confirming.discard(gid)

        task = asyncio.get_running_loop().create_task(confirm())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve_membership_proof(self, peer: int, body: bytes) -> bytes:
        (gid,) = decode_ints(body, 1)
        return encode_proof(self.host.membership_proof(gid))
