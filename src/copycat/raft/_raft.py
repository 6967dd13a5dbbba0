"""The raft state machine of one node in one group: roles, terms, votes, replication,
commitment, membership, snapshots, ReadIndex and leader transfer.

Everything happens in response to `tick()`, `step(message)` and the local requests
(`propose`, `propose_conf_change`, `read_index`, `transfer_leader`, reports). Outputs
accumulate in `msgs` and `read_states` and in the log's unstable part; `RawNode`
packages them into a `Ready`.

Rules of this module:
1. No I/O, no clock, no global randomness (the `RandomSource` is injected).
2. A message's term is checked once, in `step`, before any role-specific handling.
3. Messages to other nodes are only appended to `msgs`; the host sends them after it
   has persisted the `Ready` they came with.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Final

from copycat.errors import (
    CompactedError,
    ConfChangeError,
    InternalError,
    NotLeaderError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from copycat.raft._bugs import NO_BUGS, DeliberateBugs
from copycat.raft._confchange import Changer
from copycat.raft._config import RaftConfig, RandomSource, ReadOnlyOption, SplitMix64
from copycat.raft._log import RaftLog
from copycat.raft._messages import (
    NONE,
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    Propose,
    ReadIndex,
    ReadIndexResponse,
    ReadState,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
    TransferLeader,
    entry_size,
)
from copycat.raft._progress import Progress, ProgressState
from copycat.raft._quorum import VoteResult, joint_vote
from copycat.raft._read_only import ReadOnlyQueue, ReadRequest
from copycat.raft._tracker import ProgressTracker, TrackerConfig

if TYPE_CHECKING:
    from copycat.raft._storage import LogReader

LEASE_CONTEXT_PREFIX: Final = b"\x00lease\x00"
"""What the heartbeats of a LEASE_BASED leader carry as their context: this prefix and
the leader's tick (8 bytes, big-endian) when it sent them; the follower echoes it and
the leader learns which of its heartbeats was acknowledged. Reserved: read contexts
may not begin with it."""


def _lease_context(tick: int) -> bytes:
    return LEASE_CONTEXT_PREFIX + tick.to_bytes(8, "big")


def _lease_tick_of(context: bytes) -> int | None:
    if len(context) != len(LEASE_CONTEXT_PREFIX) + 8 or not context.startswith(
        LEASE_CONTEXT_PREFIX
    ):
        return None
    return int.from_bytes(context[len(LEASE_CONTEXT_PREFIX) :], "big")


class Role(IntEnum):
    """A member's role in its group (raft paper §5.1, plus pre-candidate from §9.6)."""

    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class CampaignKind(IntEnum):
    PRE_ELECTION = 0
    ELECTION = 1
    TRANSFER = 2


class Raft:
    """One node's raft state machine. Use it through `RawNode`."""

    def __init__(
        self,
        config: RaftConfig,
        storage: LogReader,
        rng: RandomSource | None = None,
        bugs: DeliberateBugs = NO_BUGS,
    ) -> None:
        config.validate()
        self.id = config.node_id
        self.config = config
        self.bugs = bugs
        self.rng: RandomSource = rng if rng is not None else SplitMix64(config.node_id)
        self.log = RaftLog(storage, config.max_committed_bytes_per_ready)
        self.tracker = ProgressTracker(config.max_inflight_msgs, config.max_inflight_bytes)
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.lease_void = False
        """A follower that slept (quiescent) for an election timeout grants no lease to
        its leader until it hears from it again (`credit_quiet_ticks`)."""
        self.ticks = 0
        """The lease clock: every tick this node saw, and the quiet ticks credited to
        it; never reset. A LEASE_BASED leader measures its lease with it."""
        self.term_start_tick = 0
        """`ticks` when this node last became leader: every message it sent in this
        term left at that tick or later."""
        self.lease_elapsed = 0
        """LEASE_BASED groups: ticks since this node last heard from a leader (of any
        term), whatever happened meanwhile; it ignores other candidates until this
        reaches election_ticks (the promise behind its leader's lease)."""
        self.timeout_now_sent = False
        """This leader sent `TimeoutNow` in this term: the transferee's election skips
        the followers' leases, so this leader holds no lease for the rest of the term."""
        self.randomized_election_ticks = config.election_ticks
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.read_only = ReadOnlyQueue()
        self.pending_read_index: list[ReadIndex] = []
        self.dropped_proposals = 0
        self.refused_conf_changes = 0
        self.is_learner = False
        self.vote_floor = (0, 0)

        hard_state, conf_state = storage.initial_state()
        self._install_config(
            TrackerConfig.from_conf_state(conf_state),
            {
                node_id: self.tracker.new_progress(
                    self.log.last_index() + 1, node_id in conf_state.learners
                )
                for node_id in conf_state.members()
            },
        )
        if not hard_state.is_empty():
            self._load_hard_state(hard_state)
        if config.applied:
            self.log.applied_to(config.applied)
        if self.term <= 1:
            # Term 1 is the bootstrap's and no leader ever holds it (every election raises
            # the term): this node has acknowledged no leader, so it promised no lease.
            # Past it, it may have before it restarted, and keeps that promise for an
            # election timeout (only LEASE_BASED groups look at this).
            self.lease_elapsed = config.election_ticks
        self.become_follower(self.term, NONE)

    def _load_hard_state(self, hs: HardState) -> None:
        if hs.commit < self.log.committed or hs.commit > self.log.last_index():
            raise InternalError(
                f"node {self.id}: persisted commit {hs.commit} is outside the log "
                f"[{self.log.committed}, {self.log.last_index()}]"
            )
        self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    # -- roles -------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.lease_void = False
        self.randomized_election_ticks = self.config.election_ticks + self.rng.randrange(
            0, self.config.election_ticks
        )
        self.lead_transferee = NONE
        self.timeout_now_sent = False
        self.tracker.reset_votes()
        last = self.log.last_index()
        for node_id, pr in self.tracker.progress.items():
            fresh = self.tracker.new_progress(last + 1, pr.is_learner)
            if node_id == self.id:
                fresh.match = last
            self.tracker.progress[node_id] = fresh
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.read_only = ReadOnlyQueue()
        self.pending_read_index = []

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise InternalError("a leader cannot become a pre-candidate")
        # The term and vote stay: a pre-vote changes nothing durable.
        self.tracker.reset_votes()
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise InternalError("a leader cannot become a candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        if self.role == Role.FOLLOWER:
            raise InternalError("a follower cannot become leader without an election")
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self.term_start_tick = self.ticks
        me = self.tracker.progress.get(self.id)
        if me is not None:
            me.become_replicate()
            me.recent_active = True
        # Configuration changes in the uncommitted tail may exist; refuse new ones until
        # everything up to here is applied (conservative, as etcd does).
        self.pending_conf_index = self.log.last_index()
        # §5.4.2 and §8: an empty entry of the new term lets the leader commit (and learn
        # the commit index of) everything before it.
        self._append_entries([Entry(term=self.term, index=self.log.last_index() + 1)])

    def promotable(self) -> bool:
        pr = self.tracker.progress.get(self.id)
        return pr is not None and not pr.is_learner and not self.log.unstable_snapshot

    # -- ticks ----------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        self.lease_elapsed += 1
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def credit_quiet_ticks(self, ticks: int) -> None:
        """`ticks` passed while this member was quiescent (not ticking). A follower that
        has then heard nothing from its leader for an election timeout grants it no
        lease until it hears from it again: woken by a candidate's (pre-)vote, it judges
        the leader by raft's own evidence instead of the moment it stopped ticking. Its
        election clock is left alone (no campaign sooner), and a leader ignores this
        (its check-quorum would count a quiet period as silence). The lease clock
        (`ticks`) of every role moves on, though: a LEASE_BASED leader's lease does not
        outlast the time it slept."""
        self.ticks += ticks
        self.lease_elapsed += ticks
        if self.role != Role.LEADER and self.election_elapsed + ticks >= self.config.election_ticks:
            self.lease_void = True

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_ticks:
            self.election_elapsed = 0
            self.hup(CampaignKind.PRE_ELECTION if self.config.pre_vote else CampaignKind.ELECTION)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                if not self.tracker.quorum_active():
                    self.become_follower(self.term, NONE)
                    return
                for node_id, pr in self.tracker.progress.items():
                    pr.recent_active = node_id == self.id
            if self.lead_transferee != NONE:
                # The transfer did not finish within an election timeout: give up.
                self.lead_transferee = NONE
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            lease = self.config.read_only == ReadOnlyOption.LEASE_BASED
            self._broadcast_heartbeat(_lease_context(self.ticks) if lease else b"")

    # -- elections ------------------------------------------------------------------------

    def hup(self, kind: CampaignKind) -> None:
        """Start an election (or pre-election) if this node may."""
        if self.role == Role.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_change():
            # Our configuration may be about to change; campaigning now could use the
            # wrong quorum.
            return
        self.campaign(kind)

    def _has_unapplied_conf_change(self) -> bool:
        if self.log.committed <= self.log.applied:
            return False
        lo = max(self.log.applied + 1, self.log.first_index())
        try:
            entries = self.log.slice(lo, self.log.committed + 1, None)
        except (CompactedError, UnavailableError):
            return True
        return any(e.kind == EntryKind.CONF_CHANGE for e in entries)

    def campaign(self, kind: CampaignKind) -> None:
        if kind == CampaignKind.PRE_ELECTION:
            self.become_pre_candidate()
            term = self.term + 1
        else:
            self.become_candidate()
            term = self.term
        if self._poll(self.id, granted=True) == VoteResult.WON:
            # A single-voter group wins at once.
            if kind == CampaignKind.PRE_ELECTION:
                self.campaign(CampaignKind.ELECTION)
            else:
                self.become_leader()
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for node_id in sorted(self.tracker.voter_ids()):
            if node_id == self.id:
                continue
            self.msgs.append(
                RequestVote(
                    term=term,
                    sender=self.id,
                    to=node_id,
                    last_log_index=last_index,
                    last_log_term=last_term,
                    pre_vote=kind == CampaignKind.PRE_ELECTION,
                    transfer=kind == CampaignKind.TRANSFER,
                )
            )

    def _poll(self, node_id: int, *, granted: bool) -> VoteResult:
        self.tracker.record_vote(node_id, granted)
        return self.tracker.tally_votes()[2]

    # -- step: the single entry point for messages ---------------------------------------

    def step(self, m: Message) -> None:
        if m.term == 0:
            pass  # not bound to a term: forwarded proposals, reads, transfer requests
        elif m.term > self.term:
            if isinstance(m, RequestVote):
                election_ticks = self.config.election_ticks
                in_lease = self.config.check_quorum and (
                    (
                        self.lead != NONE
                        and self.election_elapsed < election_ticks
                        and not self.lease_void
                    )
                    or (
                        # A LEASE_BASED leader counts on this promise whatever this node
                        # heard since (a higher term from a stale response, a restart).
                        self.config.read_only == ReadOnlyOption.LEASE_BASED
                        and self.lease_elapsed < election_ticks
                    )
                )
                if in_lease and not m.transfer:
                    # §6 (thesis §4.2.3): we heard from a leader recently; ignore a
                    # candidate that may merely be partitioned, without raising our term.
                    return
            if isinstance(m, RequestVote) and m.pre_vote:
                pass  # a pre-vote never changes our term
            elif isinstance(m, RequestVoteResponse) and m.pre_vote and not m.reject:
                pass  # granted pre-votes carry the term we will campaign in
            elif isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
                self.become_follower(m.term, m.sender)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and isinstance(
                m, AppendEntries | Heartbeat
            ):
                # A stale leader (perhaps partitioned away while we elected a new one)
                # learns our term from this and steps down.
                self._send(
                    AppendEntriesResponse(term=self.term, sender=self.id, to=m.sender, index=0)
                )
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(
                    RequestVoteResponse(
                        term=self.term, sender=self.id, to=m.sender, reject=True, pre_vote=True
                    )
                )
            return

        if isinstance(m, RequestVote):
            self._handle_request_vote(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_request_vote(self, m: RequestVote) -> None:
        can_vote = (
            self.vote == m.sender
            or (self.vote == NONE and self.lead == NONE)
            or (m.pre_vote and m.term > self.term)
            or self.bugs.double_vote
        )
        if (
            can_vote
            and self.log.is_up_to_date(m.last_log_index, m.last_log_term)
            and (m.last_log_term, m.last_log_index) >= self.vote_floor
        ):
            # The response carries the candidate's term so that a pre-vote grant is
            # counted in the term the candidate will campaign in.
            self._send(
                RequestVoteResponse(
                    term=m.term, sender=self.id, to=m.sender, reject=False, pre_vote=m.pre_vote
                )
            )
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.sender
        else:
            self._send(
                RequestVoteResponse(
                    term=self.term, sender=self.id, to=m.sender, reject=True, pre_vote=m.pre_vote
                )
            )

    def recall(self, term: int, vote: int, last_log_term: int, last_log_index: int) -> None:
        """See `RawNode.recall`."""
        if term > self.term:
            self.become_follower(term, NONE)
            self.vote = vote
        self.vote_floor = max(self.vote_floor, (last_log_term, last_log_index))

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    # -- leader ---------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, Propose):
            self._propose_entries(list(m.entries), local=m.sender == self.id)
            return
        if isinstance(m, ReadIndex):
            self._leader_read_index(m)
            return
        if isinstance(m, TransferLeader):
            self._leader_transfer(m.target)
            return
        pr = self.tracker.progress.get(m.sender)
        if pr is None:
            return  # not (or no longer) a member
        lease = self.config.read_only == ReadOnlyOption.LEASE_BASED
        if lease and isinstance(m, AppendEntriesResponse | HeartbeatResponse):
            # The member answered a message of this term, sent as we took office or
            # later; a lease heartbeat's echo says exactly when.
            sent = self.term_start_tick
            if isinstance(m, HeartbeatResponse):
                echoed = _lease_tick_of(m.context)
                if echoed is not None and self.term_start_tick <= echoed <= self.ticks:
                    sent = echoed
            pr.lease_tick = max(pr.lease_tick, sent)
        if isinstance(m, AppendEntriesResponse):
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif isinstance(m, HeartbeatResponse):
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                # The follower is alive but the window is full: the appends that filled it
                # may all have been lost. Free one slot so that an append goes out; a
                # rejection then sends the leader back to probing.
                pr.inflights.free_first()
            if pr.match < self.log.last_index():
                self._send_append(m.sender, pr)
            if m.context and (not lease or _lease_tick_of(m.context) is None):
                self._ack_read(m.sender, m.context)

    def _handle_append_response(self, m: AppendEntriesResponse, pr: Progress) -> None:
        if m.reject:
            # The follower's hint is its last entry that may match; with its term we
            # skip past every entry of ours with a higher term in one round trip.
            next_probe = m.hint_index
            if m.hint_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decrease_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.sender, pr)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._broadcast_append()
        elif was_paused:
            self._send_append(m.sender, pr)
        # Keep the pipeline full while the window allows.
        while self._send_append(m.sender, pr, send_if_empty=False):
            pass
        if m.sender == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.sender)

    def _maybe_commit(self) -> bool:
        committed = self.log.maybe_commit(
            self.tracker.committed(), self.term, any_term=self.bugs.commit_previous_term
        )
        if committed:
            self._release_pending_reads()
        return committed

    def _send_append(self, to: int, pr: Progress, *, send_if_empty: bool = True) -> bool:
        """Send `to` the entries it lacks (or a snapshot); False if nothing was sent."""
        if pr.is_paused() or to == self.id:
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            entries = self.log.entries_from(pr.next, self.config.max_msg_bytes)
        except CompactedError:
            return self._send_snapshot(to, pr)
        except UnavailableError as exc:
            raise InternalError(f"progress of node {to} points past the log: {pr!r}") from exc
        if not entries and not send_if_empty:
            return False
        size = sum(entry_size(e) for e in entries)
        pr.sent_entries(entries[-1].index if entries else prev_index, len(entries), size)
        self._send(
            AppendEntries(
                term=self.term,
                sender=self.id,
                to=to,
                prev_index=prev_index,
                prev_term=prev_term,
                entries=tuple(entries),
                commit=self.log.committed,
            )
        )
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a node that seems down
        try:
            snapshot = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snapshot.is_empty():
            raise InternalError("the log is compacted but there is no snapshot")
        pr.become_snapshot(snapshot.metadata.index)
        self._send(InstallSnapshot(term=self.term, sender=self.id, to=to, snapshot=snapshot))
        return True

    def _broadcast_append(self) -> None:
        for node_id, pr in self.tracker.progress.items():
            if node_id != self.id:
                self._send_append(node_id, pr)

    def _broadcast_heartbeat(self, context: bytes) -> None:
        committed = self.log.committed
        for node_id, pr in self.tracker.progress.items():
            if node_id == self.id:
                continue
            self._send(
                Heartbeat(
                    term=self.term,
                    sender=self.id,
                    to=node_id,
                    commit=min(pr.match, committed),
                    context=context,
                )
            )

    # -- proposals ------------------------------------------------------------------------

    def propose(self, entries: list[Entry]) -> None:
        """A local proposal: raises `ProposalError` when it cannot be taken."""
        self.step(Propose(term=0, sender=self.id, to=self.id, entries=tuple(entries)))

    def _propose_entries(self, entries: list[Entry], *, local: bool) -> None:
        def refuse(exc: Exception) -> None:
            self.dropped_proposals += 1
            if local:
                raise exc

        if not entries:
            return
        if self.id not in self.tracker.progress:
            refuse(ProposalDroppedError("this node was removed from the group"))
            return
        if self.lead_transferee != NONE:
            refuse(ProposalDroppedError("leadership is being transferred; retry shortly"))
            return
        for position, e in enumerate(entries, start=1):
            if e.kind != EntryKind.CONF_CHANGE:
                continue
            problem = self._conf_change_problem(e.data)
            if problem:
                refuse(ConfChangeError(problem))
                return
            self.pending_conf_index = self.log.last_index() + position
        index = self.log.last_index()
        stamped = []
        for e in entries:
            index += 1
            stamped.append(Entry(term=self.term, index=index, kind=e.kind, data=e.data))
        if not self._append_entries(stamped):
            refuse(
                ProposalDroppedError(
                    f"the leader holds {self.uncommitted_bytes} uncommitted bytes, the "
                    f"limit is {self.config.max_uncommitted_bytes}; retry once it commits"
                )
            )
            return
        self._broadcast_append()

    def _conf_change_problem(self, data: bytes) -> str | None:
        try:
            cc = ConfChange.decode(data)
        except ConfChangeError as exc:
            return str(exc)
        if self.pending_conf_index > self.log.applied:
            return (
                f"a membership change (index {self.pending_conf_index}) is not applied yet "
                f"(applied {self.log.applied}); one change at a time"
            )
        joint = self.tracker.config.is_joint()
        if joint and not cc.leaves_joint():
            return "in a joint configuration: only the change that leaves it is allowed"
        if not joint and cc.leaves_joint():
            return "not in a joint configuration: there is nothing to leave"
        try:
            Changer(
                self.tracker.config,
                self.tracker.progress,
                self.log.last_index(),
                self.tracker.new_progress,
            ).apply(cc)
        except ConfChangeError as exc:
            return str(exc)
        return None

    def _append_entries(self, entries: list[Entry]) -> bool:
        size = sum(len(e.data) for e in entries)
        limit = self.config.max_uncommitted_bytes
        if limit and self.uncommitted_bytes > 0 and self.uncommitted_bytes + size > limit:
            return False
        self.uncommitted_bytes += size
        last = self.log.append(entries)
        me = self.tracker.progress.get(self.id)
        if me is not None:
            me.maybe_update(last)
        # A single-voter group commits on its own.
        self._maybe_commit()
        return True

    def reduce_uncommitted_bytes(self, entries: list[Entry]) -> None:
        if self.role == Role.LEADER and entries:
            size = sum(len(e.data) for e in entries)
            self.uncommitted_bytes = max(0, self.uncommitted_bytes - size)

    # -- reads ----------------------------------------------------------------------------

    def read_index(self, context: bytes) -> None:
        self.step(ReadIndex(term=0, sender=self.id, to=self.id, context=context))

    def _leader_read_index(self, m: ReadIndex) -> None:
        lease = self.config.read_only == ReadOnlyOption.LEASE_BASED
        if lease and m.context.startswith(LEASE_CONTEXT_PREFIX):
            # Its echo would pass for a lease heartbeat's acknowledgement.
            self._refuse_remote(
                m.sender, ValueError("read contexts may not begin with LEASE_CONTEXT_PREFIX")
            )
            return
        if self.tracker.is_singleton() or self.bugs.unconfirmed_reads:
            self._answer_read(m.sender, m.context, self.log.committed)
            return
        if self.log.term_or_zero(self.log.committed) != self.term:
            # Until an entry of our term commits we do not know the group's commit index.
            if len(self.pending_read_index) >= self.config.max_pending_read_index:
                if m.sender == self.id:
                    raise ProposalDroppedError("too many reads wait for the new leader's commit")
                return
            self.pending_read_index.append(m)
            return
        if lease and (self.bugs.stale_lease_reads or self._lease_held()):
            self._answer_read(m.sender, m.context, self.log.committed)
            return
        # SAFE, or no lease: confirm leadership with a round of heartbeats.
        request = ReadRequest(sender=m.sender, context=m.context, index=self.log.committed)
        if self.read_only.add(request):
            request.acks.add(self.id)
            self._broadcast_heartbeat(m.context)

    def _lease_held(self) -> bool:
        """Whether this leader holds its lease (see `ReadOnlyOption.LEASE_BASED`)."""
        if self.lead_transferee != NONE or self.timeout_now_sent:
            return False
        window = self.config.election_ticks - self.config.lease_drift_ticks
        # Acknowledged messages sent fewer than `window` ticks ago count.
        return self.tracker.quorum_acked_since(self.id, self.ticks - window + 1)

    def _release_pending_reads(self) -> None:
        if not self.pending_read_index or self.log.term_or_zero(self.log.committed) != self.term:
            return
        pending, self.pending_read_index = self.pending_read_index, []
        for m in pending:
            self._leader_read_index(m)

    def _ack_read(self, sender: int, context: bytes) -> None:
        acks = self.read_only.ack(sender, context)
        if acks is None:
            return
        votes = dict.fromkeys(acks, True)
        cfg = self.tracker.config
        if joint_vote(cfg.voters, cfg.voters_outgoing, votes) != VoteResult.WON:
            return
        for request in self.read_only.release_through(context):
            self._answer_read(request.sender, request.context, request.index)

    def _answer_read(self, to: int, context: bytes, index: int) -> None:
        if to == self.id or to == NONE:
            self.read_states.append(ReadState(index=index, context=context))
        else:
            self._send(
                ReadIndexResponse(
                    term=self.term, sender=self.id, to=to, index=index, context=context
                )
            )

    # -- leader transfer ------------------------------------------------------------------

    def transfer_leader(self, target: int) -> None:
        self.step(TransferLeader(term=0, sender=self.id, to=self.id, target=target))

    def _leader_transfer(self, target: int) -> None:
        pr = self.tracker.progress.get(target)
        if pr is None or pr.is_learner or target == self.id:
            return
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0
        if pr.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target, pr)

    def _send_timeout_now(self, to: int) -> None:
        self.timeout_now_sent = True
        self._send(TimeoutNow(term=self.term, sender=self.id, to=to))

    # -- followers and candidates ---------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, Propose):
            if self.lead == NONE:
                self._refuse_remote(m.sender, NotLeaderError(None))
            elif not self.config.forward_proposals:
                self._refuse_remote(m.sender, NotLeaderError(self.lead))
            else:
                self._send(Propose(term=0, sender=self.id, to=self.lead, entries=m.entries))
        elif isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.lease_void = False
            self.lead = m.sender
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.lease_void = False
            self.lead = m.sender
            self._handle_heartbeat(m)
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.lease_void = False
            self.lead = m.sender
            self._handle_snapshot(m)
        elif isinstance(m, TransferLeader):
            if self.lead != NONE:
                self._send(TransferLeader(term=0, sender=m.sender, to=self.lead, target=m.target))
        elif isinstance(m, TimeoutNow):
            # The leader asked us to take over: skip pre-vote and leases.
            self.hup(CampaignKind.TRANSFER)
        elif isinstance(m, ReadIndex):
            if self.lead == NONE:
                self._refuse_remote(m.sender, NotLeaderError(None))
            else:
                self._send(ReadIndex(term=0, sender=m.sender, to=self.lead, context=m.context))
        elif isinstance(m, ReadIndexResponse):
            self.read_states.append(ReadState(index=m.index, context=m.context))

    def _refuse_remote(self, sender: int, exc: Exception) -> None:
        self.dropped_proposals += 1
        if sender == self.id:
            raise exc

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, Propose | ReadIndex):
            self._refuse_remote(m.sender, NotLeaderError(None))
        elif isinstance(m, AppendEntries):
            self.become_follower(m.term, m.sender)
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.become_follower(m.term, m.sender)
            self._handle_heartbeat(m)
        elif isinstance(m, InstallSnapshot):
            self.become_follower(m.term, m.sender)
            self._handle_snapshot(m)
        elif isinstance(m, RequestVoteResponse):
            if m.pre_vote != (self.role == Role.PRE_CANDIDATE):
                return  # a response to an earlier round of the other kind
            result = self._poll(m.sender, granted=not m.reject)
            if result == VoteResult.WON:
                if self.role == Role.PRE_CANDIDATE:
                    self.campaign(CampaignKind.ELECTION)
                else:
                    self.become_leader()
                    self._broadcast_append()
            elif result == VoteResult.LOST:
                self.become_follower(self.term, NONE)

    def _handle_append(self, m: AppendEntries) -> None:
        self.lease_elapsed = 0
        if m.prev_index < self.log.committed:
            self._send(
                AppendEntriesResponse(
                    term=self.term, sender=self.id, to=m.sender, index=self.log.committed
                )
            )
            return
        last_new = self.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if last_new is not None:
            self._send(
                AppendEntriesResponse(term=self.term, sender=self.id, to=m.sender, index=last_new)
            )
            return
        hint_index = min(m.prev_index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, m.prev_term)
        self._send(
            AppendEntriesResponse(
                term=self.term,
                sender=self.id,
                to=m.sender,
                index=m.prev_index,
                reject=True,
                hint_index=hint_index,
                hint_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Heartbeat) -> None:
        self.lease_elapsed = 0
        self.log.commit_to(m.commit)
        self._send(
            HeartbeatResponse(term=self.term, sender=self.id, to=m.sender, context=m.context)
        )

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        self.lease_elapsed = 0
        if self._restore(m.snapshot):
            index = self.log.last_index()
        else:
            index = self.log.committed
        self._send(AppendEntriesResponse(term=self.term, sender=self.id, to=m.sender, index=index))

    def _restore(self, snapshot: Snapshot) -> bool:
        meta = snapshot.metadata
        if meta.index <= self.log.committed:
            return False
        if self.log.match_term(meta.index, meta.term):
            # We already hold the snapshot's last entry: just learn the commit index.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snapshot)
        last = self.log.last_index()
        cs = meta.conf_state
        self._install_config(
            TrackerConfig.from_conf_state(cs),
            {
                node_id: self.tracker.new_progress(last + 1, node_id in cs.learners)
                for node_id in cs.members()
            },
        )
        return True

    # -- membership -----------------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Install a committed membership change (called as its entry is applied).

        A change that is invalid against the current configuration is skipped: every
        member applies the same log to the same configuration, so every member skips it
        alike. It is counted in `refused_conf_changes`.
        """
        try:
            config, progress = Changer(
                self.tracker.config,
                self.tracker.progress,
                self.log.last_index(),
                self.tracker.new_progress,
            ).apply(cc)
        except ConfChangeError:
            self.refused_conf_changes += 1
            return self.tracker.conf_state()
        return self._install_config(config, progress)

    def _install_config(self, config: TrackerConfig, progress: dict[int, Progress]) -> ConfState:
        self.tracker.config = config
        self.tracker.progress = progress
        me = progress.get(self.id)
        self.is_learner = me is not None and me.is_learner
        if self.role == Role.LEADER and (me is None or me.is_learner):
            # Removed or demoted: step down so that the rest of the group elects a leader.
            self.become_follower(self.term, NONE)
            return config.conf_state()
        if self.lead_transferee != NONE and self.lead_transferee not in config.all_voters():
            self.lead_transferee = NONE
        if self.role == Role.LEADER and config.all_voters():
            # The quorum changed: the commit index may move, and new members need entries.
            if self._maybe_commit():
                self._broadcast_append()
            else:
                for node_id, pr in self.tracker.progress.items():
                    if node_id != self.id:
                        self._send_append(node_id, pr, send_if_empty=False)
        return config.conf_state()

    def maybe_auto_leave_joint(self) -> None:
        cfg = self.tracker.config
        if (
            self.role == Role.LEADER
            and cfg.is_joint()
            and cfg.auto_leave
            and self.log.applied >= self.pending_conf_index
        ):
            entry = Entry(
                term=self.term, index=0, kind=EntryKind.CONF_CHANGE, data=ConfChange().encode()
            )
            # Not local: a refusal (a transfer under way...) is counted, not raised; the
            # leader tries again after its next apply.
            self._propose_entries([entry], local=False)

    # -- reports from the host ------------------------------------------------------------

    def report_unreachable(self, node_id: int) -> None:
        pr = self.tracker.progress.get(node_id)
        if self.role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node_id: int, *, success: bool) -> None:
        pr = self.tracker.progress.get(node_id)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not success:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's next heartbeat response before probing again.
        pr.probe_sent = True
