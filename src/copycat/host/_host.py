"""The multi-raft host: every raft group of one node, driven by one event loop.

What lives here: `Host` (groups, the tick loop, the ready cycle, proposals with
sessions, snapshot shipping, the control requests) and `Feed` (a subscriber's ordered,
exactly-once view of one group's commits).

The ready cycle, for all groups at once (docs/ready-loop.md):
1. collect the `Ready` of every group that has one;
2. write all of them in one storage batch, committed with one fsync;
3. send their messages through the transport (snapshots as streams);
4. hand committed entries on (resolve local proposals, wake subscribers);
5. advance every group.
The cycle runs synchronously on the event loop, so no group is touched between its
`ready()` and `advance()`.

What must not live here: user-facing API shapes (that is `copycat`), placement decisions
(`copycat.placement`), wire formats (`copycat.transport`).

Snapshots hold [format, session table, user bytes] (see `_snapshot_payload`). A
subscriber's member takes them at the subscriber's position, so the session table and
the user's state describe the same index; detached members never build one themselves,
they receive them (as raft snapshots, or as offers after a subscriber's member compacts).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import msgpack

from copycat._ids import group_name
from copycat._snapshot import LOAD_SNAPSHOT
from copycat.errors import (
    BrokenError,
    ClosedError,
    ConfChangeError,
    CopyCatError,
    CorruptLogError,
    GroupNotFoundError,
    InternalError,
    MayHaveCommittedError,
    MessageTooLargeError,
    NotLeaderError,
    ProposalDroppedError,
    ProposalError,
    ProposalTimeoutError,
    ReadTimeoutError,
    TransportError,
)
from copycat.host._force import ForcedConf, plan_sole_voter
from copycat.host._raftlog import MetadataOnlyLog
from copycat.host._rule import ReplicaRule
from copycat.host._sessions import (
    SESSION_ID_BYTES,
    Proposal,
    SessionTable,
    decode_proposal,
    encode_proposal,
)
from copycat.host._tombstones import Retired
from copycat.raft import (
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Propose,
    RaftConfig,
    RawNode,
    Role,
    Snapshot,
    SnapshotMetadata,
    TimeoutNow,
    add_learner,
    add_voter,
    bootstrap_entries,
    remove_node,
)
from copycat.storage import WriteBatch

if TYPE_CHECKING:
    from copycat._snapshot import LoadSnapshot, SnapshotProvider
    from copycat.host._config import HostConfig
    from copycat.raft import Ready
    from copycat.storage import GroupLog, LogStore
    from copycat.transport import Envelope, Transport

log = logging.getLogger("copycat.host")

SNAPSHOT_FORMAT: Final = 1
MAX_HELD_PROPOSALS: Final = 10_000
FEED_MEMORY_ITEMS: Final = 4096
"""Most entries of one cycle a caught-up subscriber takes straight from memory."""
EXPIRE_EVERY_ENTRIES: Final = 1024
"""Session expiry runs at every index that is a multiple of this (same on every member)."""
"""Proposals a group keeps while it has no leader; older ones wait for their retry."""


def _snapshot_payload(table: bytes, user: bytes) -> bytes:
    packed: bytes = msgpack.packb([SNAPSHOT_FORMAT, table, user])
    return packed


def _parse_snapshot_payload(raw: bytes, group: int, index: int) -> tuple[bytes, bytes]:
    try:
        fmt, table, user = msgpack.unpackb(raw)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptLogError(group, index, f"undecodable snapshot payload: {exc}") from exc
    if fmt != SNAPSHOT_FORMAT or not isinstance(table, bytes) or not isinstance(user, bytes):
        raise CorruptLogError(group, index, "malformed snapshot payload")
    return table, user


@dataclass(slots=True)
class Session:
    """A proposer's identity for exactly-once delivery (one per subscription)."""

    id: bytes = field(default_factory=lambda: os.urandom(SESSION_ID_BYTES))
    next_seq: int = 1
    in_flight: set[int] = field(default_factory=set)
    window: asyncio.Semaphore | None = None
    """Bounds proposals in flight (set by the host on first use)."""
    low: int = 1
    """No sequence below this one is in flight (advanced lazily by `first_unacked`)."""

    def first_unacked(self) -> int:
        """The lowest sequence in flight, or the next one: amortized O(1), since
        sequences are handed out in order and `low` only moves up."""
        in_flight = self.in_flight
        low = self.low
        while low < self.next_seq and low not in in_flight:
            low += 1
        self.low = low
        return low


class Feed:
    """One subscriber's exactly-once, ordered stream of a group's commits.

    It reads committed entries from the log at the subscriber's pace, so a slow
    subscriber holds at most `feed_batch_bytes` in memory while its lag stays on disk
    (the log is never compacted past the subscriber's position).
    """

    def __init__(self, host: Host, group: _Group, provider: SnapshotProvider) -> None:
        self._host = host
        self._group = group
        self._provider = provider
        # The group's own limits when it has them (every member deduplicates alike),
        # else this node's configuration (a group created before rules carried them).
        rule = ReplicaRule.decode(group.log.meta())
        self.table = SessionTable(
            ttl_entries=(rule and rule.session_ttl_entries) or host.config.session_ttl_entries,
            max_sessions=(rule and rule.max_sessions) or host.config.max_sessions,
        )
        self.position = 0
        """Index of the last entry the subscriber has been handed."""
        self.behind_since = asyncio.get_running_loop().time()
        """When the subscriber was last caught up (waiting with nothing to hand out):
        while it lags, how long it has been behind (`lag_seconds`)."""
        self._pending_load: bytes | None = None
        self._announce_load = False
        self._buffer: deque[tuple[int, bytes]] = deque()
        """Items consumed from the log and not yet handed out, with their indexes."""
        self._held: int | None = None
        """While the subscriber holds an item (or a LOAD_SNAPSHOT waits for it): what
        `delivered()` says, the position reached before that item."""
        self._yielded_to: asyncio.Task[object] | None = None
        """The task the stream is suspended in, handing it an item (None otherwise)."""
        self._delivery_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        """Heap of `wait_delivered` calls by the index they wait for."""
        self._close_error: CopyCatError | None = None
        self.handed = 0
        """The index of the item the stream handed out last (a LOAD_SNAPSHOT's: its
        snapshot's index); 0 before the first."""
        self._load_index = 0
        self._since_snapshot = 0
        self.wake = asyncio.Event()
        self.closed = False
        self.on_error: Callable[[CopyCatError], None] | None = None
        """Where errors no call raises go (the subscription's `errors()`)."""
        self._start_from_snapshot()

    def _start_from_snapshot(self) -> None:
        group = self._group
        meta = group.log.snapshot_metadata()
        if meta.index == 0:
            self.position = 0
            return
        raw = self._host.store.snapshots.read_bytes(group.gid, meta.index, meta.term)
        table, user = _parse_snapshot_payload(raw, group.gid, meta.index)
        self.table.restore(table, group=group.gid, index=meta.index)
        # Until the subscriber takes LOAD_SNAPSHOT and comes back, its state is the one
        # it had built before: that is what it has been delivered.
        self._held = self.delivered() if self._held is None else self._held
        self.position = meta.index
        self._load_index = meta.index
        self._pending_load = user
        self._announce_load = True
        self._since_snapshot = 0

    def take_snapshot_bytes(self) -> bytes | None:
        """The user's bytes of the snapshot announced by the last LOAD_SNAPSHOT."""
        data, self._pending_load = self._pending_load, None
        return data

    # -- delivery (read barriers and read-your-writes) -----------------------------------

    def delivered(self) -> int:
        """The raft index this subscriber has been delivered through: it took every item
        at or below it out of the stream and came back for the next one (entries with
        nothing to hand out, such as a leader's empty entry, a configuration change or a
        duplicate, pass with the items around them); or the stream started over from a
        snapshot there, and the subscriber took LOAD_SNAPSHOT and came back."""
        if self._held is not None:
            return self._held
        if self._buffer:
            return self._buffer[0][0] - 1
        return self.position

    def _resumed(self) -> None:
        """The subscriber came back for the next item: the one it held is delivered."""
        self._held = None
        self._yielded_to = None
        if self._delivery_waiters:
            self._check_delivered()

    def _check_delivered(self) -> None:
        waiters = self._delivery_waiters
        reached = self.delivered()
        while waiters and waiters[0][0] <= reached:
            fut = heapq.heappop(waiters)[2]
            if not fut.done():
                fut.set_result(None)

    def held_by_current_task(self) -> bool:
        """Whether the running task holds the item the stream handed out last (it is
        inside its loop over the stream: nothing is delivered until it comes back)."""
        return self._yielded_to is not None and self._yielded_to is asyncio.current_task()

    async def read_barrier(self, timeout_s: float) -> int:
        """Return once `delivered()` reaches an index at least as high as everything
        committed before the call (`Host.read_index`), with that index; within
        `timeout_s`, else `ReadTimeoutError`. Raises like `wait_delivered`."""
        index: int | None = None
        try:
            async with asyncio.timeout(timeout_s):
                index = await self._host.read_index(self._group.gid, self)
                await self._until_delivered(index)
        except TimeoutError:
            what = "got no read index from a leader" if index is None else f"to {index}"
            raise ReadTimeoutError(
                self._group.gid,
                index,
                self.delivered(),
                timeout_s,
                f"{group_name(self._group.gid)}: the read barrier {what}",
            ) from None
        return index

    async def wait_delivered(self, index: int, timeout_s: float) -> None:
        """Return once `delivered()` reaches `index`, within `timeout_s` (else
        `ReadTimeoutError`). Raises `ClosedError` (or the group's error) when the stream
        ends first, and `CopyCatError` when called from the task that holds the
        subscriber's current item (only that task's return to the stream could deliver
        it: it would wait forever)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._until_delivered(index)
        except TimeoutError:
            raise ReadTimeoutError(
                self._group.gid,
                index,
                self.delivered(),
                timeout_s,
                f"{group_name(self._group.gid)}: position {index} was not delivered",
            ) from None

    async def _until_delivered(self, index: int) -> None:
        if self._close_error is not None:
            raise self._close_error
        if self.delivered() >= index:
            return
        if self.held_by_current_task():
            raise CopyCatError(
                f"{group_name(self._group.gid)}: waiting for delivery of {index} in the task "
                "that iterates commits() and holds an item would wait forever (the stream "
                "delivers only when that task comes back for the next item); wait in "
                "another task, or after the loop over commits() moved on"
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._delivery_waiters, (index, next(_retry_order), fut))
        await fut

    def shut(self, error: CopyCatError) -> None:
        """End the stream; every `wait_delivered` raises `error`."""
        self.closed = True
        self.wake.set()
        if self._close_error is None:
            self._close_error = error
        waiters, self._delivery_waiters = self._delivery_waiters, []
        for _, _, fut in waiters:
            if not fut.done():
                fut.set_exception(error)

    def __aiter__(self) -> AsyncIterator[bytes | LoadSnapshot]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes | LoadSnapshot]:
        while not self.closed:
            if self._announce_load:
                self._announce_load = False
                self.handed = self._load_index
                self._yielded_to = asyncio.current_task()
                yield LOAD_SNAPSHOT
                self._resumed()
                continue
            if self._buffer:
                self._held = self.delivered()
                self.handed, data = self._buffer.popleft()
                self._yielded_to = asyncio.current_task()
                yield data
                self._resumed()
                continue
            await self._maybe_snapshot()
            # An awaiting provider let the cycle `offer` entries into the buffer (and set
            # `wake`, which the clear below forgets): hand them out first.
            if self._buffer or self._fill():
                continue
            self.wake.clear()
            if self._fill():
                continue
            await self.wake.wait()
            # It was caught up until now: what is committed from here on is its lag.
            self.behind_since = asyncio.get_running_loop().time()

    def lag_seconds(self) -> float:
        """Seconds this subscriber has been behind the group's commit index (0 while it
        holds everything committed)."""
        if self._group.raw.commit_index() <= self.position:
            return 0.0
        return asyncio.get_running_loop().time() - self.behind_since

    def _fill(self) -> bool:
        """Read the next committed entries after `position` from the log; True if
        anything changed."""
        group = self._group
        if group.restored_at > self.position:
            # The member installed a snapshot past us: reload from it.
            self._buffer.clear()
            self._start_from_snapshot()
            return True
        hi = group.applied
        if hi <= self.position:
            return False
        self._consume(
            group.log.entries(self.position + 1, hi + 1, self._host.config.feed_batch_bytes)
        )
        return True

    def offer(
        self, entries: list[Entry], waiters: dict[tuple[bytes, int], asyncio.Future[int]]
    ) -> bool:
        """Entries the group just applied: taken straight from memory when the
        subscriber is caught up (they follow its position and its buffer is empty), so
        that a subscriber keeping up never reads the log back; otherwise ignored, and
        `_fill` reads them from the log when the subscriber gets there. True when taken
        (the proposals' `waiters` are then resolved here, decoding each entry once)."""
        if (
            entries
            and entries[0].index == self.position + 1
            and not self._buffer  # the buffer must drain: snapshots are taken when empty
            and len(entries) <= FEED_MEMORY_ITEMS
            and self._group.restored_at <= self.position
        ):
            self._consume(entries, waiters)
            return True
        return False

    def _consume(
        self,
        entries: list[Entry],
        waiters: dict[tuple[bytes, int], asyncio.Future[int]] | None = None,
    ) -> None:
        group = self._group
        table = self.table
        for entry in entries:
            index = entry.index
            self.position = index
            self._since_snapshot += 1
            if index % EXPIRE_EVERY_ENTRIES == 0:
                # At fixed indexes, so that every member expires the same sessions at the
                # same point of the log and makes the same deduplication decisions.
                table.expire(index)
            if entry.kind != EntryKind.NORMAL:
                continue
            proposal = decode_proposal(entry.data, group=group.gid, index=index)
            if proposal is None:
                continue
            if waiters:
                fut = waiters.pop((proposal.session, proposal.seq), None)
                if fut is not None and not fut.done():
                    fut.set_result(index)
            if table.apply(proposal, index):
                self._buffer.append((index, proposal.data))
            else:
                self._host.counters["proposals_deduplicated"] += 1
        if self._delivery_waiters:
            self._check_delivered()  # entries with nothing to hand out pass at once

    async def _maybe_snapshot(self) -> None:
        if self._since_snapshot < self._host.config.snapshot_every_entries:
            return
        self._since_snapshot = 0
        # What the snapshot describes is fixed now, when the user's state is exactly the
        # items handed out so far: an awaiting provider lets the cycle consume more
        # entries (`offer`), which are not in its bytes and must stay after the snapshot.
        position = self.position
        table = self.table.encode()
        try:
            produced = self._provider()
            user = await produced if isinstance(produced, Awaitable) else produced
            if not isinstance(user, bytes | bytearray | memoryview):
                raise TypeError(f"the snapshot provider returned {type(user).__name__}, not bytes")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the user's code: report it, keep the stream going
            error = BrokenError(
                f"{group_name(self._group.gid)}: the snapshot provider failed; no snapshot was "
                f"taken at {position} (the log is kept, so nothing is lost): {exc!r}"
            )
            error.__cause__ = exc
            log.warning("%s", error)
            if self.on_error is not None:
                self.on_error(error)
            return
        if self.closed or self._host.groups.get(self._group.gid) is not self._group:
            return  # left or dropped while the provider ran
        self._host.take_snapshot(self._group, position, table, bytes(user))


class _Pending:
    """A proposal waiting to be seen committed."""

    __slots__ = ("data", "deadline", "fut", "seq", "session")

    def __init__(
        self, session: Session, seq: int, data: bytes, fut: asyncio.Future[int], deadline: float
    ) -> None:
        self.session = session
        self.seq = seq
        self.data = data
        self.fut = fut
        self.deadline = deadline


class _Reads:
    """The ReadIndex rounds of one group's member here (see `Host.read_index`): at most
    one round in flight; barriers that arrive meanwhile join the next one."""

    __slots__ = ("context", "joining", "round", "sent_at")

    def __init__(self) -> None:
        self.round: list[asyncio.Future[int]] = []
        """The barriers the round in flight (or the one to send again) answers."""
        self.joining: list[asyncio.Future[int]] = []
        """Barriers that arrived while a round was in flight: the next round's."""
        self.context: bytes | None = None
        """The context of the round in flight (None: no round in flight)."""
        self.sent_at = 0.0

    def waiting(self) -> bool:
        return bool(self.round or self.joining)


_retry_order = itertools.count()
"""Tie-breaker of the retry heaps (never compare `_Pending` objects)."""


class _Group:
    """One raft group's member on this node."""

    __slots__ = (
        "applied",
        "awake_since",
        "campaign_wanted",
        "changed",
        "confs",
        "feed",
        "gid",
        "heard",
        "idle_ticks",
        "last_progress",
        "leader_seen",
        "leading_since",
        "log",
        "member",
        "moved_here",
        "opened_at",
        "origins",
        "outbox",
        "quiet_since",
        "raw",
        "reads",
        "recalled_term",
        "refusal",
        "replaying",
        "restored_at",
        "retries",
        "retry_at",
        "retry_timer",
        "stopped",
        "transfer_term",
        "waiters",
    )

    def __init__(self, gid: int, raw: RawNode, group_log: GroupLog) -> None:
        self.gid = gid
        self.raw = raw
        self.log = group_log
        self.applied = group_log.snapshot_metadata().index
        self.restored_at = 0
        self.recalled_term = 0
        """The term of this node's deleted member of the group that this one recalled
        (`RawNode.recall`), or 0."""
        self.feed: Feed | None = None
        self.waiters: dict[tuple[bytes, int], asyncio.Future[int]] = {}
        self.reads = _Reads()
        self.outbox: list[bytes] = []
        """Proposals queued in this loop turn, handed to raft together by the cycle."""
        self.retries: list[tuple[float, int, _Pending]] = []
        """Heap of proposals by the time they are resent (or time out) unless committed:
        one timer per group, not one per proposal."""
        self.retry_at = 0.0
        self.retry_timer: asyncio.TimerHandle | None = None
        self.idle_ticks = 0
        self.campaign_wanted = False
        """`campaign` was asked before the member knew its configuration (a new group's
        bootstrap entries are applied by the next cycle): campaign once it does."""
        self.replaying = False
        """Opened from the store, this member has not yet applied what it had committed:
        once it has, `Host._campaign_if_sole_voter`."""
        self.last_progress: tuple[int, int, int] = (0, 0, 0)
        self.leader_seen = 0
        """The last leader this member knew (0: none yet): when another one shows, the
        proposals still waiting are resent to it at once, not after `proposal_retry_s`."""
        self.leading_since = 0.0
        """When this member last became the leader (loop time; meaningful while it is)."""
        self.transfer_term = 0
        """The term a leader transfer to this member would win (its term when it was told
        to campaign at once, plus one), or 0."""
        self.moved_here = False
        """Whether this member's leadership came by a transfer (not an election after a
        timeout): what the leader-following cooldown applies to."""
        self.origins: dict[int, int] = {}
        """While this member leads: proposals received per node they came from (this
        node's own included), since `Host.take_origins` last read them."""
        self.changed = asyncio.Event()
        """Set whenever the group applies entries (membership waits on it)."""
        self.confs: list[tuple[int, ConfState | None]] = [(self.applied, raw.conf_state())]
        """The configurations in force since the latest snapshot, each with the index
        from which it holds (None: not known there, see `note_confs`); the first is the
        snapshot's. A snapshot carries the one in force at its own index (`conf_at`),
        which may lag raft's applied one."""
        self.refusal: CopyCatError | None = None
        self.stopped: InternalError | None = None
        """A bug stopped this member (`Host._stop_group`): it takes no message, tick or
        proposal any more; the node and its other groups go on."""
        """Raised by every new proposal when set (a group found to be the younger of two
        under one id, see `Host.refuse_proposals`)."""
        self.heard: dict[int, float] = {}
        """When a raft message from each peer last arrived (loop time): the raft side of
        the evidence that repair needs before it replaces a member."""
        self.opened_at = asyncio.get_running_loop().time()
        self.awake_since = self.opened_at
        """When the group last began to tick (opened, or woken from quiescence)."""
        self.quiet_since: float | None = None
        """When the group last stopped ticking (quiesced), while it is quiescent."""
        self.member = raw.node_id in raw.conf_state().members()
        """Whether this node is in the group's applied configuration (a change from True
        to False is how a member learns of its removal: from its own log)."""

    def note_confs(self, indexes: list[int], conf: ConfState) -> None:
        """The configuration-change entries at `indexes` (ascending) were just applied,
        leaving `conf`. Raft applies a whole batch before the host looks, so with several
        changes in one batch the configurations between the first and the last are not
        known here (no snapshot is taken there). Changes at or before the latest record
        are not recorded again: a member replaying its log after a forced configuration
        (`Host.force_sole_voter`) has them all recorded already."""
        if self.confs and indexes[-1] <= self.confs[-1][0]:
            return
        if len(indexes) > 1:
            self.confs.append((indexes[0], None))
        self.confs.append((indexes[-1], conf))

    def conf_at(self, index: int) -> ConfState | None:
        """The configuration in force once entry `index` is applied, or None when not
        known (before the latest snapshot, or inside a batch of several changes)."""
        found: ConfState | None = None
        for at, conf in self.confs:
            if at > index:
                break
            found = conf
        return found

    def rebase_confs(self, index: int, conf: ConfState) -> None:
        """A snapshot at `index` with `conf` is now the latest: forget what came before
        it (so the records stay bounded by the changes since the latest snapshot)."""
        self.confs = [(index, conf), *(item for item in self.confs if item[0] > index)]

    def stop_retries(self) -> None:
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        self.retries.clear()

    def progress(self) -> tuple[int, int, int]:
        """What changes when the group does work (heartbeats alone do not change it)."""
        raw = self.raw
        return raw.last_index(), raw.commit_index(), raw.term


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipProof:
    """A leader's committed configuration of a group, with the term that proves it
    current (see `Host.membership_proof`)."""

    term: int
    voters: frozenset[int]
    learners: frozenset[int]

    def holds(self, node_id: int) -> bool:
        return node_id in self.voters or node_id in self.learners


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupStatus:
    """A read-only view of this node's member of one group (etcd's `BasicStatus`): what
    the rest of the package reads instead of raft's internals."""

    gid: int
    role: Role
    leader_id: int
    term: int
    commit: int
    applied: int
    voters: frozenset[int]
    learners: frozenset[int]
    joint: bool
    subscribed: bool
    """A subscriber's feed is attached here."""
    blank: bool
    """The member has heard from no one yet (no term, no log, no snapshot)."""
    refusing_writes: bool = False
    """New proposals are refused (`Host.refuse_proposals`)."""
    last_index: int = 0
    """The last index in this member's log."""
    log_entries: int = 0
    """Entries in this member's log, not compacted into a snapshot."""
    delivered: int | None = None
    """The last index handed to the subscriber here (None: no subscriber)."""
    subscriber_lag_s: float = 0.0
    """How long the subscriber here has been behind the commit index (`Feed.lag_seconds`)."""

    @property
    def is_leader(self) -> bool:
        return self.role == Role.LEADER


class Host:
    """Every raft group this node hosts, over one log store and one transport endpoint."""

    def __init__(
        self,
        config: HostConfig,
        store: LogStore,
        endpoint: Transport,
        *,
        recall: Callable[[int], Retired | None] | None = None,
    ) -> None:
        self.config = config
        self._recall = recall
        """What this node's deleted member of a group was (its tombstone), if any: every
        member opened here recalls it (see `RawNode.recall`)."""
        self.store = store
        self.endpoint = endpoint
        self.groups: dict[int, _Group] = {}
        self._awake: set[int] = set()
        """Groups that tick; the others are quiescent (see `_may_quiesce`)."""
        self._failed_nodes: set[int] = set()
        """Nodes the membership layer reported failed (`node_failed`); followers only
        quiesce under a leader that is not among them."""
        self._lazy_hard: dict[int, HardState] = {}
        """Commit indexes not yet written (`Ready.commit_only`): they go with the next
        write, or with the tick's if none comes first."""
        self._dirty: set[int] = set()
        self._cycle_scheduled = False
        self._tick_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.on_removed: Callable[[int], None] | None = None
        """Called with a group id when this node's member applies a configuration (or
        installs a snapshot) that no longer holds it: the node decides what follows
        (a subscriber rejoins, a detached replica is deleted)."""
        self.counters: dict[str, int] = {
            "cycles": 0,
            "entries_persisted": 0,
            "commit_writes_deferred": 0,
            "messages_sent": 0,
            "unknown_group_messages": 0,
            "snapshots_sent": 0,
            "snapshots_received": 0,
            "snapshots_taken": 0,
            "snapshot_bytes_taken": 0,
            "snapshot_send_ms": 0,
            "proposals_resent_new_leader": 0,
            "proposals_retried": 0,
            "proposals_deduplicated": 0,
            "leader_changes": 0,
            "elections_started": 0,
            "groups_stopped": 0,
            "stopped_group_messages": 0,
            "read_barriers": 0,
            "read_index_rounds": 0,
        }
        self._reading: set[int] = set()
        """Groups with ReadIndex barriers waiting (their rounds are retried by `tick`)."""
        self._read_prefix = b""
        self._read_rounds = itertools.count(1)
        self._with_origins: set[int] = set()
        """Groups led here whose `origins` counted proposals (see `take_origins`)."""
        endpoint.set_message_handler(self._on_messages)
        endpoint.set_unreachable_handler(self._on_unreachable)
        endpoint.set_snapshot_handler(self._on_snapshot)
        endpoint.register_request_handler("copycat.add_member", self._serve_add_member)
        endpoint.register_request_handler("copycat.remove_member", self._serve_remove_member)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        for gid in self.store.groups():
            self._open(gid)
        self._tick_task = asyncio.get_running_loop().create_task(self._tick_loop())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, CopyCatError):
                await task
        for group in self.groups.values():
            if group.feed is not None:
                group.feed.shut(ClosedError("the node is shut down"))
            self._fail_reads(group, ClosedError("the node is shut down"))
            group.stop_retries()
            for fut in group.waiters.values():
                if not fut.done():
                    fut.set_exception(
                        MayHaveCommittedError(
                            "the node shut down before the proposal was seen committed; "
                            "it may have committed (at most once)"
                        )
                    )
        if self._lazy_hard:
            try:
                self._commit(WriteBatch())
            except CopyCatError as exc:  # not needed for safety: a restart relearns it
                log.warning("could not write the latest commit indexes at close: %s", exc)

    # -- groups -----------------------------------------------------------------------------

    def _raft_config(self) -> RaftConfig:
        c = self.config
        return RaftConfig(
            node_id=c.node_id,
            election_ticks=c.election_ticks,
            heartbeat_ticks=c.heartbeat_ticks,
            max_msg_bytes=c.max_msg_bytes,
        )

    def _open(self, gid: int) -> _Group:
        group_log = self.store.group(gid)
        raw = RawNode(self._raft_config(), MetadataOnlyLog(group_log))
        group = _Group(gid, raw, group_log)
        retired = self._recall(gid) if self._recall is not None else None
        if retired is not None:
            raw.recall(
                term=retired.term,
                vote=retired.vote,
                last_log_term=retired.last_log_term,
                last_log_index=retired.last_log_index,
            )
            group.recalled_term = retired.term
        self.groups[gid] = group
        if raw.has_ready():
            group.replaying = True  # the configuration is known once that is applied
        else:
            self._campaign_if_sole_voter(group)
        self._awake.add(gid)
        self._mark(gid)
        return group

    def _campaign_if_sole_voter(self, group: _Group) -> None:
        """A member opened from the store that is its group's only voter campaigns now:
        nobody else can lead, and waiting out an election timeout would only keep it
        from serving (a node restarted with 10,000 groups, whose elections would all
        time out together)."""
        raw = group.raw
        conf = raw.conf_state()
        if (
            conf.voters == frozenset({self.config.node_id})
            and not conf.voters_outgoing
            and not raw.leader_id
            and raw.promotable()
        ):
            raw.campaign()
            self._mark(group.gid)

    def create_group(self, gid: int, voters: list[int], *, meta: bytes | None = None) -> None:
        """Start a new group whose first voters are `voters` (this node must be one).
        Each other voter must run `open_member(gid)` (the `start_replica` request).
        `meta` is stored as the group's metadata record (see `group_meta`)."""
        existing = self.groups.get(gid)
        if existing is not None and not self.is_blank(gid):
            raise ValueError(f"{group_name(gid)} already exists on node {self.config.node_id}")
        entries = bootstrap_entries(voters)
        batch = WriteBatch()
        if meta is not None:
            batch.set_meta(gid, meta)
        batch.append(gid, entries)
        batch.set_hard_state(gid, HardState(term=1, commit=len(entries)))
        self.store.commit(batch)
        if existing is None:
            self._open(gid)
        else:
            # An empty member opened a moment earlier (a subscriber's join that raced the
            # creation): it has heard from no one, so it restarts from the new log.
            existing.raw = RawNode(self._raft_config(), MetadataOnlyLog(existing.log))
            self._awake.add(gid)
            self._mark(gid)

    def force_sole_voter(self, gid: int) -> ForcedConf:
        """Disaster recovery: make this node's member of `gid` the group's only voter,
        keeping every entry it has (see `copycat.host._force` for what is written). The
        caller has made sure the rest of the group's voters are gone for good
        (`copycat.host.Recovery`). The member then restarts from its log, as after a
        process restart, keeping its subscriber's feed (which goes on from its
        position), its proposals waiting (resent to the new leader, itself) and its
        sessions; it campaigns at once, alone."""
        group = self.group(gid)
        self._run_cycle_now()  # what the member holds in memory is on disk first
        plan = plan_sole_voter(group.log, self.config.node_id, term_seen=group.raw.term)
        self._lazy_hard.pop(gid, None)  # the plan's commit index is past it
        batch = WriteBatch()
        batch.append(gid, list(plan.entries))
        batch.set_hard_state(gid, plan.hard_state)
        self._commit(batch)
        log.warning(
            "%s: RECOVERED by force: node %d is now the only voter (was %s); entries kept "
            "up to %d (commit was %d), recovery entries %d..%d in term %d",
            group_name(gid),
            self.config.node_id,
            sorted(plan.before.voters | plan.before.voters_outgoing),
            plan.last_index,
            plan.commit_index,
            plan.entries[0].index,
            plan.recovery_index,
            plan.new_term,
        )
        group.raw = RawNode(self._raft_config(), MetadataOnlyLog(group.log))
        snapshot = group.log.snapshot_metadata()
        # The restarted member applies its log again from its snapshot (raft rebuilds
        # its configuration so); the feed goes on from its own position.
        group.applied = snapshot.index
        group.confs = [(snapshot.index, snapshot.conf_state), *plan.confs]
        group.member = True
        group.leader_seen = 0
        group.transfer_term = 0
        group.moved_here = False
        group.campaign_wanted = True
        group.last_progress = (0, 0, 0)
        now = asyncio.get_running_loop().time()
        group.idle_ticks = 0
        group.awake_since = now
        group.quiet_since = None
        self._awake.add(gid)
        self._mark(gid)
        return plan

    def is_blank(self, gid: int) -> bool:
        """True when this node's member of `gid` exists but has heard from no one yet (no
        term, no log, no snapshot): what `open_member` leaves until a leader fills it."""
        return _blank(self.group(gid))

    def retired_state(self, gid: int) -> Retired:
        """What this node's member of `gid` is now, for its tombstone before it is
        deleted (`drop_group`)."""
        raw = self.group(gid).raw
        last = raw.last_index()
        return Retired(
            term=raw.term, vote=raw.vote, last_log_term=raw.term_at(last) or 0, last_log_index=last
        )

    def open_member(self, gid: int, *, meta: bytes | None = None) -> None:
        """Host an empty member of group `gid`; the leader fills it once it adds this node.
        `meta`, when given, becomes the group's metadata record unless it has one (it is
        written once for the group's life; see `group_meta`), or has one without an
        incarnation while `meta` has one (the creator's record, which names the group)."""
        stored = self.store.group(gid).meta()
        if meta is not None and (stored is None or _upgrades(stored, meta)):
            batch = WriteBatch()
            batch.set_meta(gid, meta)
            self.store.commit(batch)
        if gid not in self.groups:
            self._open(gid)

    def group_meta(self, gid: int) -> bytes | None:
        """The metadata record stored for group `gid` here (what the node keeps beside
        raft, such as the group's replica rule), or None."""
        return self.group(gid).log.meta()

    def group(self, gid: int) -> _Group:
        group = self.groups.get(gid)
        if group is None:
            raise GroupNotFoundError(gid)
        return group

    def campaign(self, gid: int) -> None:
        """Start an election for `gid` here now, or as soon as this member has applied
        its configuration (right after `create_group`), instead of waiting for an
        election timeout."""
        self.wake(gid)
        group = self.group(gid)
        if group.raw.promotable():
            group.raw.campaign()
        else:
            group.campaign_wanted = True
        self._mark(gid)

    # -- the cycle ----------------------------------------------------------------------

    def _mark(self, gid: int) -> None:
        self._dirty.add(gid)
        if not self._cycle_scheduled and not self._closed:
            self._cycle_scheduled = True
            asyncio.get_running_loop().call_soon(self._run_cycle)

    def _run_cycle(self) -> None:
        self._cycle_scheduled = False
        dirty, self._dirty = self._dirty, set()
        readies = []
        for gid in dirty:
            group = self.groups.get(gid)
            if group is None or group.stopped is not None:
                continue
            try:
                ready = self._take_ready(group)
            except InternalError as exc:
                self._stop_group(group, exc)
                continue
            if ready is not None:
                readies.append((group, ready))
        if not readies:
            return
        self.counters["cycles"] += 1
        # A leader's appends leave before its own write and travel while it fsyncs
        # (thesis §10.2.1); nothing received is stepped before the write below is done,
        # since it runs in this same callback.
        early = False
        for group, rd in readies:
            if rd.send_before_persist and rd.messages:
                self._send(group, rd)
                early = True
        if early:
            self.endpoint.flush()
        batch = WriteBatch()
        lazy = self._lazy_hard
        for group, rd in readies:
            if rd.snapshot is not None:
                batch.install_snapshot(group.gid, rd.snapshot.metadata)
            if rd.entries:
                batch.append(group.gid, rd.entries)
                self.counters["entries_persisted"] += len(rd.entries)
            if rd.hard_state is not None:
                if rd.commit_only:
                    lazy[group.gid] = rd.hard_state  # written with the next batch
                    self.counters["commit_writes_deferred"] += 1
                else:
                    lazy.pop(group.gid, None)
                    batch.set_hard_state(group.gid, rd.hard_state)
        if batch:
            self._commit(batch)  # one transaction, one fsync, every group
        for group, rd in readies:
            try:
                self._after_write(group, rd)
            except InternalError as exc:
                self._stop_group(group, exc)
        if self._dirty and not self._cycle_scheduled:
            self._cycle_scheduled = True
            asyncio.get_running_loop().call_soon(self._run_cycle)

    def _after_write(self, group: _Group, rd: Ready) -> None:
        """What follows the write of `group`'s ready: send, apply, advance, and what
        the applied entries change."""
        if not rd.send_before_persist:
            self._send(group, rd)
        if rd.snapshot is not None:
            group.applied = rd.snapshot.metadata.index
            group.restored_at = rd.snapshot.metadata.index
            if group.feed is not None:
                group.feed.wake.set()  # LOAD_SNAPSHOT, even if no entry follows
        if rd.committed_entries:
            self._applied(group, rd.committed_entries)
        group.raw.advance(rd)
        if rd.read_states:
            self._read_answered(group, rd)
        if rd.snapshot is not None:
            snap = rd.snapshot.metadata
            group.rebase_confs(snap.index, snap.conf_state)
        changes = [e.index for e in rd.committed_entries if e.kind == EntryKind.CONF_CHANGE]
        if changes:  # raft applied them in `advance`: record where each holds
            group.note_confs(changes, group.raw.conf_state())
        if rd.snapshot is not None or changes:
            self._check_still_member(group)
        if group.campaign_wanted and group.raw.promotable():
            group.campaign_wanted = False
            group.raw.campaign()
        if group.replaying:
            if group.raw.has_ready():
                self._mark(group.gid)  # more of its log to apply first
            else:
                group.replaying = False
                self._campaign_if_sole_voter(group)
        if rd.soft_state is not None:
            if rd.soft_state.role == Role.CANDIDATE:
                self.counters["elections_started"] += 1  # a real vote, past pre-vote
            if rd.soft_state.leader_id:
                self._leader_known(group, rd.soft_state.leader_id)
        if group.raw.has_ready() or (
            group.outbox and rd.soft_state is not None and rd.soft_state.leader_id
        ):
            self._dirty.add(group.gid)

    def _stop_group(self, group: _Group, error: InternalError) -> None:
        """A bug (an invariant of raft or of the host broke) in `group`: stop this member
        and keep the node and its other groups going (fail closed). Its proposals fail
        with `error`, new ones are refused with it, its subscriber's stream ends with it
        (and `errors()` reports it), and it takes no message or tick any more. It stays
        listed, so status shows it; a restart of the node opens it again."""
        if group.stopped is not None:
            return
        group.stopped = error
        group.refusal = error
        self.counters["groups_stopped"] += 1
        log.error(
            "%s: stopped by a bug, the node and its other groups go on (please file a "
            "report with this log): %s",
            group_name(group.gid),
            error,
            exc_info=error,
        )
        self._awake.discard(group.gid)
        self._dirty.discard(group.gid)
        group.stop_retries()
        for fut in group.waiters.values():
            if not fut.done():
                fut.set_exception(error)
        self._fail_reads(group, error)
        if group.feed is not None:
            if group.feed.on_error is not None:
                group.feed.on_error(error)
            group.feed.shut(error)

    def _take_ready(self, group: _Group) -> Ready | None:
        """Hand `group`'s queued proposals to raft, then take its ready if it has one."""
        if group.outbox:
            batch_items, group.outbox = group.outbox, []
            if group.raw.is_leader():
                own = self.config.node_id
                group.origins[own] = group.origins.get(own, 0) + len(batch_items)
                self._with_origins.add(group.gid)
            try:
                group.raw.propose_many(batch_items)
            except ProposalError:
                # No leader yet (or flow control): keep them for the moment a leader
                # is known (below), bounded; the retry timers resend anyway.
                group.outbox[:0] = batch_items[-MAX_HELD_PROPOSALS:]
        return group.raw.ready() if group.raw.has_ready() else None

    def _leader_known(self, group: _Group, leader: int) -> None:
        """`leader` leads `group` now: when it is not the leader seen before, resend every
        proposal still waiting (those forwarded to a leader that died are lost with it;
        the resend carries the same session and sequence, so none applies twice)."""
        previous, group.leader_seen = group.leader_seen, leader
        if previous == leader:
            return
        self.counters["leader_changes"] += 1
        group.origins.clear()
        if leader == self.config.node_id:
            group.leading_since = asyncio.get_running_loop().time()
            group.moved_here = group.raw.term == group.transfer_term
        if group.reads.round:
            self._start_read_round(group)  # the old leader will not answer the round
        if previous == 0:
            return
        waiting = [p for _, _, p in group.retries if not p.fut.done()]
        for p in waiting:
            self._queue_proposal(group, p)
        if waiting:
            self.counters["proposals_resent_new_leader"] += len(waiting)

    def take_origins(self, gid: int) -> dict[int, int]:
        """Proposals the leader of `gid` received per origin node since the last call
        (empty when this node does not lead it), and start counting again."""
        self._with_origins.discard(gid)
        group = self.groups.get(gid)
        if group is None:
            return {}
        origins, group.origins = group.origins, {}
        return origins if group.raw.is_leader() else {}

    def groups_with_origins(self) -> list[int]:
        """Groups that counted proposals since `take_origins` last read them."""
        return list(self._with_origins)

    def leading_for(self, gid: int) -> tuple[float, bool] | None:
        """(seconds since this node became the leader of `gid`, whether a leader transfer
        brought it here); None unless it leads."""
        group = self.groups.get(gid)
        if group is None or not group.raw.is_leader():
            return None
        return asyncio.get_running_loop().time() - group.leading_since, group.moved_here

    def _send(self, group: _Group, rd: Ready) -> None:
        endpoint = self.endpoint
        for m in rd.messages:
            if isinstance(m, InstallSnapshot):
                self._spawn(self._ship_snapshot(group.gid, m))
                continue
            try:
                endpoint.send(group.gid, m)
                self.counters["messages_sent"] += 1
            except (TransportError, ValueError) as exc:
                log.warning("%s: cannot send %s: %s", group_name(group.gid), type(m).__name__, exc)

    def _commit(self, batch: WriteBatch) -> None:
        """Write `batch` (durably), with every commit index whose write was deferred
        (`Ready.commit_only`): so the stored commit of a group never trails a
        compaction or snapshot written for it."""
        lazy = self._lazy_hard
        for gid, hard_state in lazy.items():
            batch.set_hard_state(gid, hard_state)
        self.store.commit(batch)
        lazy.clear()  # only once written: a failed write keeps them for the next one

    def _applied(self, group: _Group, entries: list[Entry]) -> None:
        group.applied = entries[-1].index
        group.changed.set()
        feed = group.feed
        if feed is not None and feed.offer(entries, group.waiters):
            feed.wake.set()
            return  # the feed decoded them and resolved the waiters on the way
        if group.waiters:
            for entry in entries:
                if entry.kind != EntryKind.NORMAL or not entry.data:
                    continue
                try:
                    proposal = decode_proposal(entry.data, group=group.gid, index=entry.index)
                except CorruptLogError:
                    log.exception("%s: undecodable entry %d", group_name(group.gid), entry.index)
                    continue
                if proposal is None:
                    continue
                fut = group.waiters.pop((proposal.session, proposal.seq), None)
                if fut is not None and not fut.done():
                    fut.set_result(entry.index)
        if feed is not None:
            feed.wake.set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick_loop(self) -> None:
        interval = self.config.tick_interval_s
        while True:
            await asyncio.sleep(interval)
            self.tick()

    def tick(self) -> None:
        """One tick for every group that is not quiescent."""
        if self._lazy_hard and not self._closed:
            try:
                self._commit(WriteBatch())  # deferred commit indexes, at most a tick late
            except CopyCatError as exc:  # the next write carries them; ticks go on
                log.warning("could not write deferred commit indexes: %s", exc)
        quiesce_after = self.config.quiesce_after_ticks
        settled = []
        broken: list[tuple[_Group, InternalError]] = []
        for gid in self._awake:
            group = self.groups.get(gid)
            if group is None:
                settled.append(gid)
                continue
            progress = group.progress()
            if progress != group.last_progress:
                group.last_progress = progress
                group.idle_ticks = 0
            else:
                group.idle_ticks += 1
                if group.idle_ticks >= quiesce_after and self._may_quiesce(group):
                    settled.append(gid)
                    continue
            try:
                group.raw.tick()
            except InternalError as exc:
                broken.append((group, exc))
                continue
            self._dirty.add(gid)
        for stopped, error in broken:
            self._stop_group(stopped, error)
        now = asyncio.get_running_loop().time()
        for gid in settled:
            self._awake.discard(gid)
            group = self.groups.get(gid)
            if group is not None:
                group.quiet_since = now
        if self._reading:
            self._retry_reads(now)
        if self._dirty and not self._cycle_scheduled:
            self._cycle_scheduled = True
            asyncio.get_running_loop().call_soon(self._run_cycle)

    def _may_quiesce(self, group: _Group) -> bool:
        """Idle groups stop ticking (no heartbeats, no election timer) until a message,
        a proposal or a failure wakes them. A leader quiesces once every member holds
        its whole log; a follower once it hears nothing new from a leader that the
        membership layer has not reported failed (if that leader's node fails,
        `node_failed` wakes the group and it elects another)."""
        raw = group.raw
        if group.waiters or group.outbox or raw.has_ready() or group.reads.waiting():
            return False
        if raw.is_leader():
            if raw.lead_transferee:
                return False
            # With a member reported failed the leader keeps heartbeating: its silence is
            # the raft side of repair's evidence (`unheard_for`), and a quiescent leader
            # hears nothing from anyone, failed or not.
            if not self._failed_nodes.isdisjoint(raw.conf_state().members()):
                return False
            return raw.all_match(raw.last_index())
        leader = raw.leader_id
        return bool(leader) and raw.role == Role.FOLLOWER and leader not in self._failed_nodes

    def wake(self, gid: int) -> None:
        """Make a quiescent group tick again."""
        group = self.groups.get(gid)
        if group is not None and gid not in self._awake:
            self._awake.add(gid)
            group.idle_ticks = 0
            now = asyncio.get_running_loop().time()
            group.awake_since = now
            if group.quiet_since is not None:
                # The time it slept counts toward a follower's lease on its leader.
                quiet = int((now - group.quiet_since) / self.config.tick_interval_s)
                group.raw.credit_quiet_ticks(quiet)
                group.quiet_since = None

    def node_failed(self, node_id: int) -> None:
        """The membership layer declared `node_id` failed: wake every group it leads (or
        is a member of), so that they elect a new leader if they must."""
        self._failed_nodes.add(node_id)
        for gid, group in self.groups.items():
            if group.raw.leader_id == node_id or node_id in group.raw.conf_state().members():
                self.wake(gid)

    def node_missing(self, node_id: int) -> None:
        """Repair finds `node_id` absent from the membership view without a failure
        reported (this node restarted and never saw it, say): treat it as failed until
        membership reports it joined or recovered."""
        if node_id not in self._failed_nodes:
            self.node_failed(node_id)

    def node_recovered(self, node_id: int) -> None:
        """`node_id` is alive again (or joined anew)."""
        self._failed_nodes.discard(node_id)

    def quiescent_groups(self) -> int:
        return len(self.groups) - len(self._awake)

    # -- transport callbacks -----------------------------------------------------------

    def _on_messages(self, peer: int, envelopes: list[Envelope]) -> None:
        now = asyncio.get_running_loop().time()
        for gid, message in envelopes:
            group = self.groups.get(gid)
            if group is None:
                self.counters["unknown_group_messages"] += 1
                continue
            if group.stopped is not None:
                self.counters["stopped_group_messages"] += 1
                continue
            group.heard[peer] = now
            if gid not in self._awake:
                self.wake(gid)  # first: its quiet time counts when it judges a vote
            if isinstance(message, TimeoutNow):
                group.transfer_term = group.raw.term + 1
            elif isinstance(message, Propose) and group.raw.is_leader():
                group.origins[peer] = group.origins.get(peer, 0) + len(message.entries)
                self._with_origins.add(gid)
            try:
                group.raw.step(message)
            except InternalError as exc:
                self._stop_group(group, exc)
                continue
            self._mark(gid)

    def _on_unreachable(self, peer: int, groups: frozenset[int] | None) -> None:
        targets = self.groups.keys() if groups is None else groups
        for gid in targets:
            group = self.groups.get(gid)
            if group is not None:
                group.raw.report_unreachable(peer)
                self._mark(gid)

    async def _ship_snapshot(self, gid: int, message: InstallSnapshot) -> None:
        meta = message.snapshot.metadata
        success = False
        started = asyncio.get_running_loop().time()
        try:
            reader = self.store.snapshots.open(gid, meta.index, meta.term)
            try:
                chunks = _iterate_chunks(reader.chunks())
                await self.endpoint.send_snapshot(gid, message, chunks)
                success = True
                self.counters["snapshots_sent"] += 1
                took = asyncio.get_running_loop().time() - started
                self.counters["snapshot_send_ms"] += int(took * 1000)
            finally:
                reader.close()
        except (CopyCatError, OSError) as exc:
            log.warning(
                "%s: snapshot %d to node %d failed: %s",
                group_name(gid),
                meta.index,
                message.to,
                exc,
            )
        group = self.groups.get(gid)
        if group is not None and message.term != 0:
            group.raw.report_snapshot(message.to, success=success)
            self._mark(gid)

    async def _on_snapshot(
        self, peer: int, gid: int, message: InstallSnapshot, chunks: AsyncIterator[bytes]
    ) -> None:
        group = self.groups.get(gid)
        if group is None:
            raise GroupNotFoundError(gid)
        meta = message.snapshot.metadata
        writer = self.store.snapshots.begin_write(gid, meta)
        try:
            async for chunk in chunks:
                writer.write(chunk)
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        self.counters["snapshots_received"] += 1
        if message.term == 0:
            # An offer from a subscriber's member: record it and compact up to it.
            self._adopt_offered_snapshot(group, meta)
            return
        group.raw.step(message)
        self._mark(gid)
        self._run_cycle_now()

    def _run_cycle_now(self) -> None:
        if not self._closed:
            self._cycle_scheduled = False
            self._run_cycle()

    # -- snapshots --------------------------------------------------------------------------

    def take_snapshot(self, group: _Group, index: int, table: bytes, user: bytes) -> None:
        """Record a snapshot of `group` at `index` (which its subscriber has consumed),
        compact the log below it, and offer it to the other members.

        It carries the configuration in force at `index`, not raft's applied one (the
        subscriber may lag behind a membership change); when that is not known here (an
        index between two changes raft applied in one batch) no snapshot is taken: the
        log is kept, and the next one is taken a few entries later."""
        log_ = group.log
        meta_now = log_.snapshot_metadata()
        if index <= meta_now.index or index > group.applied:
            # Nothing newer; or a member that does not hold the subscriber's position
            # yet (filled from a snapshot behind it): the next one follows.
            return
        snap_conf = group.conf_at(index)
        if snap_conf is None:
            log.info(
                "%s: no snapshot at %d: the configuration there is not known",
                group_name(group.gid),
                index,
            )
            return
        term = log_.term(index)
        meta = SnapshotMetadata(index=index, term=term, conf_state=snap_conf)
        self.store.snapshots.write_bytes(group.gid, meta, _snapshot_payload(table, user))
        batch = WriteBatch()
        batch.record_snapshot(group.gid, meta)
        batch.compact(group.gid, max(0, index - self.config.snapshot_keep_entries))
        self._commit(batch)
        self.store.snapshots.prune(group.gid, protect=meta)
        group.rebase_confs(index, snap_conf)
        self.counters["snapshots_taken"] += 1
        self.counters["snapshot_bytes_taken"] += len(table) + len(user)
        conf = group.raw.conf_state()
        for member in sorted(conf.members() - {self.config.node_id}):
            if member in self._failed_nodes:
                continue  # raft ships it when the member is back and behind
            offer = InstallSnapshot(
                term=0, sender=self.config.node_id, to=member, snapshot=Snapshot(metadata=meta)
            )
            self._spawn(self._ship_snapshot(group.gid, offer))

    def _adopt_offered_snapshot(self, group: _Group, meta: SnapshotMetadata) -> None:
        """Record a snapshot another member's subscriber took, and compact up to it, but
        never past this node's own subscriber: its feed reads the log on from its
        position, so the entries after that position stay (it must see no gap; a new or
        restarted subscriber here starts from the recorded snapshot)."""
        if meta.index > group.applied or meta.index <= group.log.snapshot_metadata().index:
            return  # not applied here yet (raft will ship one), or nothing newer
        try:
            if group.log.term(meta.index) != meta.term:
                return
        except CopyCatError:
            return
        compact_to = meta.index - self.config.snapshot_keep_entries
        feed = group.feed
        if feed is not None and not feed.closed:
            compact_to = min(compact_to, feed.position)
        batch = WriteBatch()
        batch.record_snapshot(group.gid, meta)
        batch.compact(group.gid, max(0, compact_to))
        self._commit(batch)
        self.store.snapshots.prune(group.gid, protect=meta)
        group.rebase_confs(meta.index, meta.conf_state)

    # -- proposals ----------------------------------------------------------------------------

    async def propose(self, gid: int, session: Session, data: bytes) -> int:
        """Propose `data` to group `gid` and return once it is committed, with the index
        at which it applies (the first entry that carries it: a retry's duplicate later
        in the log is skipped at apply). Retried with the same (session, sequence) until
        committed or `proposal_timeout_s` passes."""
        if self._closed:
            raise ClosedError("the node is shut down")
        cfg = self.config
        if len(data) > cfg.max_proposal_bytes:
            raise MessageTooLargeError(len(data), cfg.max_proposal_bytes, "a proposal")
        group = self.group(gid)
        if group.refusal is not None:
            raise group.refusal
        if session.window is None:
            session.window = asyncio.Semaphore(cfg.max_in_flight_proposals)
        async with session.window:
            return await self._propose_in_window(gid, group, session, data)

    async def _propose_in_window(
        self, gid: int, group: _Group, session: Session, data: bytes
    ) -> int:
        seq = session.next_seq
        session.next_seq += 1
        session.in_flight.add(seq)
        loop = asyncio.get_running_loop()
        now = loop.time()
        fut: asyncio.Future[int] = loop.create_future()
        key = (session.id, seq)
        group.waiters[key] = fut
        pending = _Pending(session, seq, data, fut, now + self.config.proposal_timeout_s)
        self._queue_proposal(group, pending)
        self._schedule_retry(group, pending, now)
        try:
            return await fut
        finally:
            group.waiters.pop(key, None)
            session.in_flight.discard(seq)

    def _queue_proposal(self, group: _Group, p: _Pending) -> None:
        """Queue the proposal for the next cycle (the proposals of one loop turn go to
        raft together)."""
        session = p.session
        group.outbox.append(
            encode_proposal(
                Proposal(
                    session=session.id,
                    seq=p.seq,
                    first_unacked=session.first_unacked(),
                    data=p.data,
                )
            )
        )
        self.wake(group.gid)
        self._mark(group.gid)

    def _schedule_retry(self, group: _Group, p: _Pending, now: float) -> None:
        due = min(now + self.config.proposal_retry_s, p.deadline)
        heapq.heappush(group.retries, (due, next(_retry_order), p))
        if group.retry_timer is None or due < group.retry_at:
            if group.retry_timer is not None:
                group.retry_timer.cancel()
            group.retry_at = due
            group.retry_timer = asyncio.get_running_loop().call_at(due, self._retry, group)

    def _retry(self, group: _Group) -> None:
        """Resend every proposal of `group` not seen committed after `proposal_retry_s`:
        the same (session, seq), so duplicates are filtered at apply; fail those past
        `proposal_timeout_s`."""
        group.retry_timer = None
        if self.groups.get(group.gid) is not group:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = group.retries
        due_now = []
        while heap and heap[0][0] <= now:
            due_now.append(heapq.heappop(heap)[2])
        for p in due_now:
            if p.fut.done():
                continue
            if now >= p.deadline:
                p.fut.set_exception(
                    ProposalTimeoutError(
                        f"{group_name(group.gid)}: proposal {p.seq} not seen committed within "
                        f"{self.config.proposal_timeout_s} s; it may still commit (at most once)"
                    )
                )
                continue
            self._queue_proposal(group, p)
            self._schedule_retry(group, p, now)
            self.counters["proposals_retried"] += 1
        if heap and group.retry_timer is None:
            group.retry_at = heap[0][0]
            group.retry_timer = loop.call_at(group.retry_at, self._retry, group)

    # -- read barriers ------------------------------------------------------------------------

    async def read_index(self, gid: int, feed: Feed | None = None) -> int:
        """An index of group `gid` at least as high as every index committed before this
        call (a ReadIndex through the leader, confirmed by a quorum of heartbeats; the
        raft core forwards it from a follower or a learner). Barriers that arrive while
        a round is in flight share the next round. A round that gets no answer (no
        leader yet, a leader change, a lost message) is sent again by the tick after
        `proposal_retry_s`, or at once when a new leader shows; it waits until answered
        or cancelled (the caller bounds it). Raises `ClosedError` when the node shuts
        down or `feed` (the subscriber asking, if any) is closed, and the group's error
        when it stops here."""
        if self._closed:
            raise ClosedError("the node is shut down")
        if feed is not None and feed.closed:
            raise feed._close_error or ClosedError("this subscription is closed")
        group = self.group(gid)
        if group.refusal is not None:
            raise group.refusal
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        group.reads.joining.append(fut)
        self.counters["read_barriers"] += 1
        self._reading.add(gid)
        if group.reads.context is None and not group.reads.round:
            self._start_read_round(group)
        return await fut

    def _start_read_round(self, group: _Group) -> None:
        """Send a new ReadIndex round for every barrier waiting in `group` (those of an
        abandoned round and those that joined since)."""
        reads = group.reads
        live = [f for f in (*reads.round, *reads.joining) if not f.done()]
        reads.round, reads.joining, reads.context = live, [], None
        if not live:
            self._reading.discard(group.gid)
            return
        if not self._read_prefix:
            # Unique per round across nodes and lives: the leader keeps pending reads by
            # context, and a late answer to an abandoned round must never match.
            self._read_prefix = os.urandom(8)
        context = self._read_prefix + next(self._read_rounds).to_bytes(8, "big")
        reads.sent_at = asyncio.get_running_loop().time()
        self.wake(group.gid)
        try:
            group.raw.read_index(context)
        except ProposalError:
            return  # no leader known (or too many reads queued): `tick` tries again
        reads.context = context
        self.counters["read_index_rounds"] += 1
        self._mark(group.gid)

    def _read_answered(self, group: _Group, rd: Ready) -> None:
        reads = group.reads
        for state in rd.read_states:
            if reads.context is None or state.context != reads.context:
                continue  # an abandoned round's late answer: it may predate a barrier
            answered, reads.round, reads.context = reads.round, [], None
            for fut in answered:
                if not fut.done():
                    fut.set_result(state.index)
        if reads.context is None:
            self._start_read_round(group)  # the barriers that joined meanwhile, if any

    def _retry_reads(self, now: float) -> None:
        retry_s = self.config.proposal_retry_s
        for gid in list(self._reading):
            group = self.groups.get(gid)
            if group is None:
                self._reading.discard(gid)
                continue
            reads = group.reads
            if reads.context is None or now - reads.sent_at >= retry_s:
                self._start_read_round(group)

    def _fail_reads(self, group: _Group, error: CopyCatError) -> None:
        reads = group.reads
        waiting, reads.round, reads.joining = [*reads.round, *reads.joining], [], []
        reads.context = None
        self._reading.discard(group.gid)
        for fut in waiting:
            if not fut.done():
                fut.set_exception(error)

    # -- membership of a group ----------------------------------------------------------------

    async def add_member(self, gid: int, node_id: int, *, voter: bool) -> None:
        """On the leader: add `node_id` to group `gid` (as a learner or a voter) and
        return once the change is applied here. Raises `NotLeaderError` elsewhere.
        A learner asked for that is already a voter stays a voter (never demote a voter
        because a subscriber on its node joined late)."""
        group = self.group(gid)
        if not group.raw.is_leader():
            raise NotLeaderError(group.raw.leader_id or None)
        await self._change_membership(
            group,
            add_voter(node_id) if voter else add_learner(node_id),
            lambda conf: node_id in (conf.voters if voter else conf.members()),
            f"adding node {node_id}",
        )

    async def remove_member(self, gid: int, node_id: int) -> None:
        """On the leader: remove `node_id` from group `gid`; returns once applied here."""
        await self._change_membership(
            self.group(gid),
            remove_node(node_id),
            lambda conf: node_id not in conf.members(),
            f"removing node {node_id}",
        )

    async def wait_caught_up(self, gid: int, node_id: int) -> None:
        """On the leader: return once member `node_id` of group `gid` holds everything
        committed (a learner ready to be promoted). `NotLeaderError` when leadership is
        lost, `ProposalTimeoutError` after `proposal_timeout_s`."""
        group = self.group(gid)
        raw = group.raw
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.proposal_timeout_s
        while loop.time() < deadline:
            if not raw.is_leader():
                raise NotLeaderError(raw.leader_id or None)
            match = raw.match_of(node_id)
            if match is not None and match >= raw.commit_index():
                return
            group.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(group.changed.wait(), self.config.tick_interval_s * 5)
        raise ProposalTimeoutError(f"{group_name(gid)}: node {node_id} did not catch up in time")

    async def _change_membership(
        self, group: _Group, change: ConfChange, done: Callable[[ConfState], bool], what: str
    ) -> None:
        """Propose `change` on the leader (again after another pending change applies)
        until `done(configuration)` holds here; `NotLeaderError` when leadership is lost,
        `ProposalTimeoutError` after `proposal_timeout_s`."""
        raw = group.raw
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.proposal_timeout_s
        proposed = False
        while not done(raw.conf_state()):
            if loop.time() > deadline:
                raise ProposalTimeoutError(f"{group_name(group.gid)}: {what} did not commit")
            if not raw.is_leader():
                raise NotLeaderError(raw.leader_id or None)
            if not proposed:
                try:
                    raw.propose_conf_change(change)
                    self._mark(group.gid)
                    proposed = True
                except (ConfChangeError, ProposalDroppedError):
                    pass  # another change is pending: try again after the next apply
            group.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(group.changed.wait(), self.config.tick_interval_s * 5)

    async def transfer_leader(self, gid: int, to: int) -> None:
        """On the leader: hand the leadership of group `gid` to voter `to` (thesis
        §3.10) and return once this node is no longer its leader. Raises
        `NotLeaderError` elsewhere, ValueError when `to` is not another voter, and
        `ProposalTimeoutError` when this node still leads after two election timeouts
        (raft abandons a transfer after one; proposals are refused meanwhile)."""
        group = self.group(gid)
        raw = group.raw
        if not raw.is_leader():
            raise NotLeaderError(raw.leader_id or None)
        if to == self.config.node_id or to not in raw.conf_state().voters:
            raise ValueError(f"{group_name(gid)}: node {to} is not another voter")
        self.wake(gid)
        raw.transfer_leader(to)
        self._mark(gid)
        loop = asyncio.get_running_loop()
        cfg = self.config
        deadline = loop.time() + 2 * cfg.election_ticks * cfg.tick_interval_s
        while raw.is_leader() and self.groups.get(gid) is group:
            if loop.time() > deadline:
                raise ProposalTimeoutError(
                    f"{group_name(gid)}: leadership did not move to node {to} in time"
                )
            await asyncio.sleep(cfg.tick_interval_s)

    def drop_group(self, gid: int) -> None:
        """Stop hosting group `gid` here and delete everything stored for it."""
        self._awake.discard(gid)
        group = self.groups.pop(gid, None)
        if group is None:
            return
        left = BrokenError(f"{group_name(gid)} left this node")
        if group.feed is not None:
            group.feed.shut(left)
        self._fail_reads(group, left)
        group.stop_retries()
        for fut in group.waiters.values():
            if not fut.done():
                fut.set_exception(
                    MayHaveCommittedError(
                        f"{group_name(gid)} left this node before the proposal was seen "
                        "committed; it may have committed (at most once)"
                    )
                )
        self._lazy_hard.pop(gid, None)
        batch = WriteBatch()
        batch.delete_group(gid)
        self._commit(batch)

    def _check_still_member(self, group: _Group) -> None:
        member = self.config.node_id in group.raw.conf_state().members()
        was, group.member = group.member, member
        if was and not member and self.on_removed is not None:
            log.info("%s: this node's member applied its own removal", group_name(group.gid))
            # Not from inside the cycle: the node may delete or rebuild the group.
            asyncio.get_running_loop().call_soon(self._report_removed, group)

    def _report_removed(self, group: _Group) -> None:
        if self._closed or self.groups.get(group.gid) is not group or group.member:
            return  # gone, or added back meanwhile
        if self.on_removed is not None:
            self.on_removed(group.gid)

    def group_status(self, gid: int) -> GroupStatus | None:
        """The status of this node's member of `gid`, or None when it hosts none."""
        group = self.groups.get(gid)
        if group is None:
            return None
        raw = group.raw
        conf = raw.conf_state()
        feed = group.feed
        last = raw.last_index()
        try:
            log_entries = last - group.log.first_index() + 1
        except CopyCatError:  # a broken group's log: its status still shows
            log_entries = 0
        return GroupStatus(
            gid=gid,
            role=raw.role,
            leader_id=raw.leader_id,
            term=raw.term,
            commit=raw.commit_index(),
            applied=group.applied,
            voters=frozenset(conf.voters),
            learners=frozenset(conf.learners),
            joint=conf.is_joint(),
            subscribed=group.feed is not None and not group.feed.closed,
            blank=_blank(group),
            refusing_writes=group.refusal is not None,
            last_index=last,
            log_entries=log_entries,
            delivered=None if feed is None else feed.position,
            subscriber_lag_s=0.0 if feed is None else feed.lag_seconds(),
        )

    def matches(self, gid: int) -> dict[int, int]:
        """On the leader: the highest index known replicated on each member of `gid`
        (empty elsewhere)."""
        return {n: pr.match for n, pr in self.group(gid).raw.status().progress.items()}

    def silent_for(self, gid: int, node_id: int) -> float:
        """Seconds since a raft message of group `gid` last arrived here from `node_id`
        (since the member opened, when none has)."""
        group = self.group(gid)
        now = asyncio.get_running_loop().time()
        return now - group.heard.get(node_id, group.opened_at)

    def unheard_for(self, gid: int, node_id: int) -> float:
        """Seconds this node's member of `gid` has ticked without a raft message of the
        group from `node_id`: the raft side of repair's evidence that a voter is gone.
        Only time awake counts, and 0.0 while the group is quiescent: a quiescent group
        sends nothing and expects nothing, so its silence says nothing of the peer."""
        group = self.group(gid)
        if gid not in self._awake:
            return 0.0
        now = asyncio.get_running_loop().time()
        return now - max(group.heard.get(node_id, group.opened_at), group.awake_since)

    def membership_proof(self, gid: int) -> MembershipProof | None:
        """What this node's member can prove about the group's configuration: None
        unless it is the leader and its configuration is the committed one (it has
        committed an entry of its own term and applied everything committed, so no
        committed change is missing from what it reports)."""
        group = self.groups.get(gid)
        if group is None:
            return None
        raw = group.raw
        if not raw.is_leader() or raw.applied_index() < raw.commit_index():
            return None
        if raw.term_at(raw.commit_index()) != raw.term:
            return None  # nothing committed in its own term yet
        conf = raw.conf_state()
        if conf.is_joint():
            return None
        return MembershipProof(
            term=raw.term, voters=frozenset(conf.voters), learners=frozenset(conf.learners)
        )

    def refuse_proposals(self, gid: int, error: CopyCatError) -> None:
        """From now on every new proposal to `gid` here raises `error` (proposals in
        flight go on: they may commit)."""
        self.group(gid).refusal = error

    def term_of(self, gid: int) -> int:
        """The raft term this node's member of `gid` is in."""
        return self.group(gid).raw.term

    async def _serve_remove_member(self, peer: int, body: bytes) -> bytes:
        gid, node_id = decode_ints(body, 2)
        await self.remove_member(gid, node_id)
        return b""

    async def _serve_add_member(self, peer: int, body: bytes) -> bytes:
        gid, node_id, voter = decode_ints(body, 3)
        await self.add_member(gid, node_id, voter=bool(voter))
        return self.group_meta(gid) or b""  # the joiner learns the group's rule

    # -- subscribers --------------------------------------------------------------------------

    def attach_feed(self, gid: int, provider: SnapshotProvider) -> Feed:
        group = self.group(gid)
        if group.feed is not None and not group.feed.closed:
            raise ValueError(f"{group_name(gid)} already has a subscriber on this node")
        group.feed = Feed(self, group, provider)
        return group.feed

    def detach_feed(self, gid: int) -> None:
        group = self.groups.get(gid)
        if group is not None and group.feed is not None:
            group.feed.shut(ClosedError("this subscription is closed"))
            group.feed = None
            self._fail_reads(group, ClosedError("this subscription is closed"))


def _blank(group: _Group) -> bool:
    """The member has heard from no one in this life: no log, no snapshot, and no term
    beyond the one it recalled."""
    return group.raw.last_index() == 0 and group.raw.term <= group.recalled_term


def _upgrades(stored: bytes, new: bytes) -> bool:
    old_rule, new_rule = ReplicaRule.decode(stored), ReplicaRule.decode(new)
    return (
        new_rule is not None
        and new_rule.incarnation != 0
        and (old_rule is None or old_rule.incarnation == 0)
    )


async def _iterate_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Feed a snapshot file's chunks to the transport, yielding to the loop between them
    (the reads are small and local; the transport's credits bound what is in flight)."""
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)


def decode_ints(body: bytes, count: int | None = None) -> tuple[int, ...]:
    """Decode a control request body: unsigned integers of up to 128 bits, each sent as
    16 big-endian bytes (msgpack integers stop at 64 bits; group ids are 128-bit ULIDs).
    `count` is the exact number expected; None accepts any number but zero."""
    try:
        values = msgpack.unpackb(body)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed request body: {exc}") from exc
    if (
        not isinstance(values, list)
        or not values
        or (count is not None and len(values) != count)
        or any(not isinstance(v, bytes) or len(v) != 16 for v in values)
    ):
        wanted = "some" if count is None else str(count)
        raise ValueError(f"a request body must be {wanted} 16-byte integers")
    return tuple(int.from_bytes(v, "big") for v in values)


def encode_ints(*values: int) -> bytes:
    """Encode a control request body (see `decode_ints`)."""
    packed: bytes = msgpack.packb([v.to_bytes(16, "big") for v in values])
    return packed
