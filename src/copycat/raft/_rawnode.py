"""`RawNode`: the raft core's whole public surface for one member of one group.

The contract a host follows, for every group it drives:

1. Feed inputs: `tick()` on every clock tick, `step(message)` for every message that
   arrived, and the local requests (`propose`, `propose_conf_change`, `read_index`,
   `transfer_leader`, `campaign`, `report_unreachable`, `report_snapshot`).
2. When `has_ready()`, take `rd = ready()`, then, in this order:
   a. persist `rd.snapshot` (if any), `rd.entries` (replacing any conflicting suffix)
      and `rd.hard_state` (if any) -- durably, before anything else;
   b. send `rd.messages` (every one may depend on what step a persisted) -- except
      that when `rd.send_before_persist` is true (a leader whose term and vote are
      already persisted, and whose commit index counts none of `rd.entries`) they may
      leave before step a, provided step a is finished before any message received
      afterwards is stepped;
   c. apply `rd.committed_entries` to the state machine in order (a conf change entry
      is applied by the core itself in `advance`; the host only records it), after
      installing `rd.snapshot` in the state machine if there is one;
   d. serve `rd.read_states` once their index is applied;
   e. call `advance(rd)`.
3. Call nothing else on the node between `ready()` and `advance(rd)`.
4. On restart, rebuild the node from the persisted log (`LogReader`); pass the last
   applied index as `RaftConfig.applied` if the state machine kept it.
5. When `rd.commit_only` is true, the hard state's only change is a higher commit
   index: the host may defer writing it (raft does not need the commit index durable;
   a restarted member learns it again), as long as it is written with or before the
   group's next write, so that the stored commit never falls behind a compaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from copycat.errors import CopyCatError, InternalError
from copycat.raft._bugs import NO_BUGS, DeliberateBugs
from copycat.raft._messages import (
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    ReadState,
    Snapshot,
)
from copycat.raft._raft import LEASE_CONTEXT_PREFIX, CampaignKind, Raft, Role

if TYPE_CHECKING:
    from copycat.raft._config import RaftConfig, RandomSource
    from copycat.raft._progress import ProgressState
    from copycat.raft._storage import LogReader


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftState:
    """Volatile state worth reporting: who leads, and this node's role."""

    leader_id: int
    role: Role


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    """Everything the host must do for a group in one cycle (see the module contract)."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    send_before_persist: bool = False
    """The messages may leave before this ready is persisted (thesis §10.2.1: a leader
    writes its log to disk in parallel with replicating it): this node leads, its term
    and vote are those already persisted, there is no snapshot to install, and the
    commit index does not count any of `entries` (as it does when the leader alone is
    a quorum), so no message tells of a commit the leader could still lose."""
    commit_only: bool = False
    """Nothing to persist but a higher commit index (no entries, no snapshot, term and
    vote unchanged): the host may defer that write (contract rule 5)."""

    def must_sync(self) -> bool:
        """Whether the host must fsync before sending this ready's messages."""
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressStatus:
    """The leader's view of one member, as reported by `RawNode.status()`."""

    match: int
    next: int
    state: ProgressState
    is_learner: bool
    paused: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """A consistent view of a node, for logs, metrics and tests."""

    node_id: int
    term: int
    vote: int
    commit: int
    applied: int
    leader_id: int
    role: Role
    conf_state: ConfState
    progress: dict[int, ProgressStatus]
    lead_transferee: int
    dropped_proposals: int


class RawNode:
    """One member of one raft group, driven by its host (see the module contract)."""

    __slots__ = ("_awaiting_advance", "_prev_hard", "_prev_soft", "_raft")

    def __init__(
        self,
        config: RaftConfig,
        storage: LogReader,
        *,
        rng: RandomSource | None = None,
        bugs: DeliberateBugs = NO_BUGS,
    ) -> None:
        self._raft = Raft(config, storage, rng, bugs)
        self._prev_soft = self._soft_state()
        self._prev_hard = self._raft.hard_state()
        self._awaiting_advance = False

    # -- inputs -------------------------------------------------------------------------

    def tick(self) -> None:
        self._raft.tick()

    def credit_quiet_ticks(self, ticks: int) -> None:
        """Ticks that passed while this member was quiescent: a follower that heard
        nothing from its leader for an election timeout grants it no lease until it
        does (`Raft.credit_quiet_ticks`); never a campaign sooner. They age a
        LEASE_BASED leader's lease too: a host that stops ticking a member must credit
        them before it steps anything else into it."""
        self._raft.credit_quiet_ticks(ticks)

    def campaign(self) -> None:
        """Start an election now (with pre-vote when configured)."""
        self._raft.hup(
            CampaignKind.PRE_ELECTION if self._raft.config.pre_vote else CampaignKind.ELECTION
        )

    def step(self, message: Message) -> None:
        """Feed a message received from another member."""
        if message.to != self._raft.id:
            raise InternalError(
                f"message for node {message.to} delivered to node {self._raft.id}: {message!r}"
            )
        self._raft.step(message)

    def propose(self, data: bytes) -> None:
        """Propose `data` for the log. On the leader it is appended at once; elsewhere
        it is forwarded to the leader. Raises `NotLeaderError` when no leader is known
        (or forwarding is off) and `ProposalDroppedError` when the leader refuses it.
        Being accepted here does not mean being committed: watch the committed entries.
        """
        self._raft.propose([Entry(term=0, index=0, data=data)])

    def propose_many(self, items: list[bytes]) -> None:
        """Propose several entries at once (one append, one message per follower)."""
        self._raft.propose([Entry(term=0, index=0, data=d) for d in items])

    def propose_conf_change(self, change: ConfChange) -> None:
        """Propose a membership change. Besides the errors of `propose`, raises
        `ConfChangeError` when the change is unsafe now (another one is pending, the
        joint rules, no voters left...)."""
        self._raft.propose(
            [Entry(term=0, index=0, kind=EntryKind.CONF_CHANGE, data=change.encode())]
        )

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; a `ReadState` with this context appears in a
        later `Ready` once the leader has confirmed its leadership: by a round of
        heartbeats, or with `ReadOnlyOption.LEASE_BASED` at once while it holds its
        lease. The context must be non-empty and must not begin with
        `LEASE_CONTEXT_PREFIX` (reserved)."""
        if not context:
            raise ValueError("read_index needs a non-empty context to match its ReadState")
        if context.startswith(LEASE_CONTEXT_PREFIX):
            raise ValueError(
                f"read contexts may not begin with {LEASE_CONTEXT_PREFIX!r} (reserved for "
                "the heartbeats of LEASE_BASED leaders)"
            )
        self._raft.read_index(context)

    def transfer_leader(self, target: int) -> None:
        """Ask the leader to hand leadership to `target` (thesis §3.10)."""
        self._raft.transfer_leader(target)

    def report_unreachable(self, node_id: int) -> None:
        """The host could not send to `node_id`; the leader stops pipelining to it."""
        self._raft.report_unreachable(node_id)

    def recall(self, *, term: int, vote: int, last_log_term: int, last_log_index: int) -> None:
        """What this node's member of the group was before its log was deleted (its term,
        its vote in that term, its last entry): a member that comes back under the same
        node id must keep the promises the deleted one made, or the group counts them
        twice. It takes the term and the vote back (raising its term, never lowering
        it) and from then on votes only for a candidate whose log is at least as up to
        date as the deleted log was, which the group may have counted in a commit.
        The next `Ready` persists the term and the vote."""
        self._raft.recall(term, vote, last_log_term, last_log_index)

    def report_snapshot(self, node_id: int, *, success: bool) -> None:
        """Outcome of sending a snapshot to `node_id`."""
        self._raft.report_snapshot(node_id, success=success)

    # -- outputs ------------------------------------------------------------------------

    def _soft_state(self) -> SoftState:
        return SoftState(leader_id=self._raft.lead, role=self._raft.role)

    def has_ready(self) -> bool:
        r = self._raft
        log = r.log
        return bool(
            r.msgs
            or log.unstable_entries
            or log.unstable_snapshot is not None
            or log.has_next_committed()
            or r.read_states
            # Field comparisons: this runs for every group on every cycle and tick.
            or r.lead != self._prev_soft.leader_id
            or r.role != self._prev_soft.role
            or r.term != self._prev_hard.term
            or r.vote != self._prev_hard.vote
            or log.committed != self._prev_hard.commit
        )

    def ready(self) -> Ready:
        if self._awaiting_advance:
            raise InternalError("ready() called again before advance() of the previous one")
        r = self._raft
        log = r.log
        soft = self._soft_state()
        hard = r.hard_state()
        prev = self._prev_hard
        vote_kept = hard.term == prev.term and hard.vote == prev.vote
        snapshot = log.unstable_snapshot
        entries = list(log.unstable_entries)
        changed = hard != prev
        # A leader's messages may leave before its write (thesis §10.2.1) only if the
        # commit index they carry rests on entries already on its disk: a leader that
        # alone is a quorum (one voter plus learners) commits its new entries at once,
        # and a crash before the write would lose entries that a learner told of that
        # commit has applied. With more voters this never binds (acknowledgements are
        # stepped only after the write, rule 2b, so the commit stays on disk). We check
        # the commit here rather than ack the leader's own entries after the write, as
        # etcd does: same safety, no extra ready cycle per commit of a lone leader.
        commit_on_disk = not entries or log.committed < entries[0].index
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if changed else None,
            snapshot=snapshot,
            entries=entries,
            committed_entries=log.next_committed(),
            messages=r.msgs,
            read_states=r.read_states,
            send_before_persist=vote_kept
            and snapshot is None
            and r.role == Role.LEADER
            and (commit_on_disk or r.bugs.early_send_lone_leader),
            commit_only=changed and vote_kept and snapshot is None and not entries,
        )
        r.msgs = []
        r.read_states = []
        if rd.soft_state is not None:
            self._prev_soft = soft
        self._awaiting_advance = True
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that the host persisted, sent and applied `rd`."""
        if not self._awaiting_advance:
            raise InternalError("advance() without a ready()")
        self._awaiting_advance = False
        r = self._raft
        log = r.log
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.metadata.index)
            if rd.snapshot.metadata.index > log.applied:
                log.applied = rd.snapshot.metadata.index
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            for entry in rd.committed_entries:
                if entry.kind == EntryKind.CONF_CHANGE:
                    r.apply_conf_change(ConfChange.decode(entry.data))
            log.applied_to(rd.committed_entries[-1].index)
            r.reduce_uncommitted_bytes(rd.committed_entries)
            r.maybe_auto_leave_joint()

    # -- queries ------------------------------------------------------------------------

    @property
    def node_id(self) -> int:
        return self._raft.id

    @property
    def leader_id(self) -> int:
        return self._raft.lead

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def vote(self) -> int:
        """Whom this member voted for in its current term (0: nobody)."""
        return self._raft.vote

    @property
    def lead_transferee(self) -> int:
        """The voter a leadership transfer is under way to (0: none)."""
        return self._raft.lead_transferee

    def last_index(self) -> int:
        """The index of the last entry in this member's log (stable or not)."""
        return self._raft.log.last_index()

    def commit_index(self) -> int:
        return self._raft.log.committed

    def applied_index(self) -> int:
        return self._raft.log.applied

    def term_at(self, index: int) -> int | None:
        """The term of entry `index` in this member's log, None when it is not there
        (compacted or beyond the end)."""
        try:
            return self._raft.log.term(index)
        except CopyCatError:
            return None

    def promotable(self) -> bool:
        """Whether this member is a voter of its applied configuration (it may campaign)."""
        return self._raft.promotable()

    def match_of(self, node_id: int) -> int | None:
        """On the leader: the highest index known replicated on `node_id`; None elsewhere
        or for a node that is not a member."""
        if self._raft.role != Role.LEADER:
            return None
        pr = self._raft.tracker.progress.get(node_id)
        return None if pr is None else pr.match

    def all_match(self, index: int) -> bool:
        """On the leader: every member holds the log up to `index` (False elsewhere)."""
        if self._raft.role != Role.LEADER:
            return False
        return all(pr.match == index for pr in self._raft.tracker.progress.values())

    def is_leader(self) -> bool:
        return self._raft.role == Role.LEADER

    def conf_state(self) -> ConfState:
        """The membership as of the last applied entry (what a snapshot taken now holds)."""
        return self._raft.tracker.conf_state()

    def status(self) -> Status:
        r = self._raft
        progress = {}
        if r.role == Role.LEADER:
            progress = {
                node_id: ProgressStatus(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    is_learner=pr.is_learner,
                    paused=pr.is_paused(),
                )
                for node_id, pr in r.tracker.progress.items()
            }
        return Status(
            node_id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.log.committed,
            applied=r.log.applied,
            leader_id=r.lead,
            role=r.role,
            conf_state=r.tracker.conf_state(),
            progress=progress,
            lead_transferee=r.lead_transferee,
            dropped_proposals=r.dropped_proposals,
        )
