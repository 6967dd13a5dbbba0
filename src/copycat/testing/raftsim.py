"""A deterministic simulator of raft groups, checking raft's safety properties after
every step.

Each seed builds a group of 3 to 5 members from one master seed -- 1, 2, 3, 5 or all
of them voters, the rest learners (growing to at most 7 members through membership
changes) -- and drives it for a number of rounds on a simulated network that delays,
reorders, drops, duplicates and partitions messages.
Nodes crash (losing everything they had not persisted, sometimes in the middle of a
ready cycle) and restart from their persisted log; the leader adds and removes members
(single changes and joint consensus); nodes take snapshots and compact their logs, and
lagging members catch up from snapshots. Each seed also picks the host's liberties the
ready contract allows: applying before sending, a leader sending before it persists
(`Ready.send_before_persist`, crashes between the send and the write included, which
lose the leader's unwritten entries), and deferring commit-only writes
(`Ready.commit_only`, lost in a crash).

After every round the checker asserts (raft paper, Figure 3):

* election safety: at most one leader per term;
* log matching: two persisted logs that hold an entry with the same index and term are
  identical up to it (checked with a hash chain per log);
* leader completeness: a new leader of term T holds every entry known to be committed
  before T;
* state machine safety: every node, learners included, applies one and the same
  sequence, so each node's applied sequence is a prefix of every other's (checked
  against a global oracle), and no node's log ever replaces an entry it applied;
* linearizable reads: a read (ReadIndex on a random live node) must return an index at
  least as high as every commit index any node held before the read was issued (a
  write acknowledged to a client is committed, so the read sees it). Per seed, groups
  with check-quorum read with `ReadOnlyOption.SAFE` or `LEASE_BASED` (leases in ticks,
  under the same partitions and crashes); `reads_at_once` counts the reads answered in
  the round they were asked (a lease, or a lone voter), with no heartbeat round.

Then the faults heal, and liveness is checked: a leader must emerge, and fresh
proposals must be applied by every member within a bound.

Run it::

    python -m copycat.testing.raftsim --seeds 300          # last line: JSON summary
    python -m copycat.testing.raftsim --seed 17 --verbose  # replay one seed
    python -m copycat.testing.raftsim --seeds 200 --bug double_vote

A failing seed prints its number; `--seed K` replays it bit for bit.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from copycat.errors import ConfChangeError, InternalError, ProposalError
from copycat.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    DeliberateBugs,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    MemoryLog,
    Message,
    RaftConfig,
    RawNode,
    ReadOnlyOption,
    ReadState,
    RequestVoteResponse,
    Role,
    Snapshot,
    add_learner,
    add_voter,
    remove_node,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

BUG_NAMES = (
    "double_vote",
    "commit_previous_term",
    "vote_before_persist",
    "unconfirmed_reads",
    "stale_lease_reads",
    "ack_before_persist",
    "early_send_lone_leader",
)
DEFAULT_ROUNDS = 1500


@dataclass(frozen=True, slots=True, kw_only=True)
class SimOptions:
    """Knobs of one simulation run. Per-seed parameters are drawn from the seed within
    the ranges set here."""

    rounds: int = DEFAULT_ROUNDS
    """Rounds of faults (one tick per node per round), before healing."""
    heal_rounds: int = 400
    """Upper bound on rounds after healing for a leader to emerge and commit."""
    min_voters: int = 3
    """The fewest initial members, and the fewest voters a removal leaves (a group
    that starts with fewer only grows, by adding voters and promoting learners)."""
    max_voters: int = 5
    """The most initial members."""
    voter_choices: tuple[int, ...] = (1, 2, 3, 5)
    """Per seed, the initial voter count is one of these not above the member count,
    or every member; the other members start as learners. One voter plus learners is
    the common shape of a new group (replicas=1, or a group made on a one-node
    cluster) and the one where a leader is a quorum by itself."""
    max_members: int = 7
    drop_rate: float = 0.05
    duplicate_rate: float = 0.02
    max_delay: int = 3
    propose_rate: float = 0.3
    crash_rate: float = 0.003
    """Per node and round: crash between rounds."""
    crash_mid_cycle_rate: float = 0.002
    """Per ready cycle: crash after stepping messages, before persisting."""
    crash_at_vote_rate: float = 0.05
    """Per ready cycle that records a new vote: crash after stepping, before persisting
    (a targeted crash point, where forgetting a vote would be fatal)."""
    crash_after_new_leader_commit_rate: float = 0.3
    """Per ready cycle in which a leader applies entries of earlier terms (what a new
    leader does when its first entry commits): crash right after applying them (before
    sending, in seeds whose host applies first). A targeted crash point: the moment
    when followers may not yet know what the leader committed."""
    crash_new_leader_before_send_rate: float = 0.1
    """Per ready cycle that makes a node leader: crash after persisting (its first
    entry is on disk) but before any message leaves. A targeted crash point that
    leaves a lone uncommitted entry of a new term behind (raft paper, Figure 8)."""
    crash_after_early_send_rate: float = 0.005
    """Per ready cycle whose messages left before its entries were written
    (`Ready.send_before_persist`): crash before the write, losing those entries. A
    targeted crash point: the others hold entries the leader no longer has."""
    restart_after: tuple[int, int] = (5, 60)
    quick_restart_rate: float = 0.3
    """Share of crashes followed by a restart within 1 to 3 rounds."""
    partition_rate: float = 0.004
    heal_partition_rate: float = 0.02
    conf_change_rate: float = 0.004
    read_rate: float = 0.05
    """Per round: a linearizable read (ReadIndex) on a random live node."""
    lease_read_rate: float = 0.5
    """Share of the seeds with check-quorum whose group reads with
    `ReadOnlyOption.LEASE_BASED` (the others, and every seed without check-quorum, read
    with SAFE)."""
    transfer_rate: float = 0.002
    """Per round: the leader is asked to hand leadership to a random voter."""
    snapshot_every: tuple[int, int] = (20, 120)
    max_msg_bytes_choices: tuple[int, ...] = (1, 1, 64, 1 << 20)
    """Per seed, the leader's append size limit is drawn from these (1: one entry per
    message, which exposes commit-rule bugs)."""
    apply_before_send_rate: float = 0.5
    """Share of seeds whose host applies committed entries before sending messages
    (both orders are allowed by the ready contract)."""
    send_early_rate: float = 0.5
    """Share of seeds whose host sends a leader's messages before persisting its ready
    when the ready allows it (`Ready.send_before_persist`); a crash before persisting
    then leaves followers holding entries the leader lost."""
    defer_commit_rate: float = 0.5
    """Share of seeds whose host defers a ready that only raises the commit index
    (`Ready.commit_only`) to its next write (a crash loses it)."""
    pre_vote_rate: float = 0.75
    check_quorum_rate: float = 0.75
    bugs: DeliberateBugs = field(default_factory=DeliberateBugs)


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    round: int
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at round {self.round}: {self.detail}"


class SafetyViolation(Exception):
    def __init__(self, violation: Violation) -> None:
        super().__init__(str(violation))
        self.violation = violation


@dataclass(slots=True)
class SeedResult:
    seed: int
    violation: Violation | None
    committed: int
    rounds: int
    elections: int
    crashes: int
    conf_changes: int
    snapshots_sent: int
    reads_served: int
    reads_at_once: int
    lease_reads: bool
    transfers: int


def _chain(prev: int, term: int, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(term.to_bytes(8, "little"), prev))


class LogMirror:
    """A hash chain over one node's persisted log: chain[i] digests entries 1..i."""

    __slots__ = ("base_hash", "base_index", "base_term", "hashes", "terms")

    def __init__(self) -> None:
        self.base_index = 0
        self.base_term = 0
        self.base_hash = 0
        self.terms: list[int] = []
        self.hashes: list[int] = []

    def last_index(self) -> int:
        return self.base_index + len(self.terms)

    def term(self, index: int) -> int | None:
        if index == self.base_index:
            return self.base_term
        pos = index - self.base_index - 1
        if 0 <= pos < len(self.terms):
            return self.terms[pos]
        return None

    def hash_at(self, index: int) -> int | None:
        if index == self.base_index:
            return self.base_hash
        pos = index - self.base_index - 1
        if 0 <= pos < len(self.hashes):
            return self.hashes[pos]
        return None

    def append(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            pos = e.index - self.base_index - 1
            if pos < 0:
                continue
            del self.terms[pos:]
            del self.hashes[pos:]
            prev = self.hashes[-1] if self.hashes else self.base_hash
            self.terms.append(e.term)
            self.hashes.append(_chain(prev, e.term, e.data))

    def reset(self, index: int, term: int, digest: int) -> None:
        self.base_index = index
        self.base_term = term
        self.base_hash = digest
        self.terms = []
        self.hashes = []


class Oracle:
    """The one applied sequence every node must follow, learned as nodes apply."""

    def __init__(self) -> None:
        self.terms: list[int] = [0]
        self.hashes: list[int] = [0]
        self.known_term: list[int] = [0]

    def last_index(self) -> int:
        return len(self.terms) - 1


class SimNode:
    __slots__ = (
        "app_hash",
        "applied",
        "deferred_hs",
        "down_until",
        "id",
        "mirror",
        "raw",
        "rng",
        "snapshot_every",
        "storage",
    )

    def __init__(self, node_id: int, storage: MemoryLog, rng: random.Random, every: int) -> None:
        self.id = node_id
        self.storage = storage
        self.rng = rng
        self.raw: RawNode | None = None
        self.mirror = LogMirror()
        self.applied = 0
        self.app_hash = 0
        self.down_until = -1
        self.snapshot_every = every
        self.deferred_hs: HardState | None = None
        """A commit-only hard state not written yet (lost in a crash)."""


class Simulation:
    """One seeded run; see the module docstring."""

    def __init__(
        self, seed: int, options: SimOptions, log: Callable[[str], None] | None = None
    ) -> None:
        self.seed = seed
        self.opts = options
        self.rng = random.Random(seed)
        self.say = log or (lambda _line: None)
        self.round = 0
        self.nodes: dict[int, SimNode] = {}
        self.retired: set[int] = set()
        self.removal_proposed: set[int] = set()
        self.next_id = 1
        # (deliver_at_round, sequence, message)
        self.in_flight: list[tuple[int, int, Message]] = []
        self.msg_seq = 0
        # (report_at_round, leader, follower, delivered): what a snapshot transfer's sender
        # learns, as a real transport reports it.
        self.snapshot_reports: list[tuple[int, int, int, bool]] = []
        self.cut: set[tuple[int, int]] = set()
        self.leaders: dict[int, int] = {}
        self.oracle = Oracle()
        self.applied_data: set[bytes] = set()
        self.proposal_seq = 0
        self.read_seq = 0
        self.reads: dict[bytes, tuple[int, int]] = {}
        """Per read context: (the highest index known committed when it was issued, the
        round it was issued in)."""
        self.max_commit = 0
        """The highest commit index any node has held so far."""
        self.reads_served = 0
        self.reads_at_once = 0
        self.transfers = 0
        self.elections = 0
        self.crashes = 0
        self.conf_changes = 0
        self.snapshots_sent = 0
        rng = self.rng
        self.max_msg_bytes = rng.choice(options.max_msg_bytes_choices)
        self.max_inflight = rng.choice([1, 4, 64])
        self.pre_vote = rng.random() < options.pre_vote_rate
        self.check_quorum = rng.random() < options.check_quorum_rate
        self.apply_before_send = rng.random() < options.apply_before_send_rate
        # Drawn apart, so that adding these host choices left every other seed as it was.
        host_choices = random.Random(seed ^ 0x5EED)
        self.send_early = host_choices.random() < options.send_early_rate
        self.defer_commit = host_choices.random() < options.defer_commit_rate
        # Its own generator as well: seeds that read SAFE run as they did before.
        lease_choice = random.Random(seed ^ 0x1EA5E)
        self.read_only = (
            ReadOnlyOption.LEASE_BASED
            if self.check_quorum and lease_choice.random() < options.lease_read_rate
            else ReadOnlyOption.SAFE
        )
        self.drop_rate = options.drop_rate * rng.choice([0.0, 0.5, 1.0, 2.0])
        members = rng.randint(options.min_voters, options.max_voters)
        ids = [self._new_id() for _ in range(members)]
        # Its own generator too, so that this draw shifts no other choice of the seed.
        topology = random.Random(seed ^ 0x70B0)
        voters = topology.choice(
            sorted({v for v in options.voter_choices if v <= members} | {members})
        )
        self.initial_voters = ids[:voters]
        self.initial_learners = ids[voters:]
        for node_id in ids:
            self._add_node(node_id, _bootstrap(self.initial_voters, self.initial_learners))
        self.say(f"voters {self.initial_voters}, learners {self.initial_learners}")

    # -- setup ---------------------------------------------------------------------------

    def _new_id(self) -> int:
        node_id = self.next_id
        self.next_id += 1
        return node_id

    def _add_node(self, node_id: int, storage: MemoryLog) -> SimNode:
        every = self.rng.randint(*self.opts.snapshot_every)
        node = SimNode(node_id, storage, random.Random(self.rng.randrange(1 << 62)), every)
        self.nodes[node_id] = node
        self._start(node)
        return node

    def _raft_config(self, node_id: int, applied: int) -> RaftConfig:
        return RaftConfig(
            node_id=node_id,
            election_ticks=10,
            heartbeat_ticks=1,
            applied=applied,
            max_msg_bytes=self.max_msg_bytes,
            max_inflight_msgs=self.max_inflight,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            read_only=self.read_only,
            max_uncommitted_bytes=1 << 16,
        )

    def _start(self, node: SimNode) -> None:
        """(Re)build a node from what it persisted; its state machine from the snapshot."""
        snap = node.storage.snapshot()
        node.applied, node.app_hash = self._decode_snapshot(node, snap)
        node.mirror.reset(snap.metadata.index, snap.metadata.term, node.app_hash)
        node.mirror.append(
            node.storage.entries(node.storage.first_index(), node.storage.last_index() + 1)
        )
        node.raw = RawNode(
            self._raft_config(node.id, 0),
            node.storage,
            rng=random.Random(node.rng.randrange(1 << 62)),
            bugs=self.opts.bugs,
        )

    def _decode_snapshot(self, node: SimNode, snap: Snapshot) -> tuple[int, int]:
        if snap.is_empty():
            return 0, 0
        index = int.from_bytes(snap.data[:8], "little")
        digest = int.from_bytes(snap.data[8:16], "little")
        if index != snap.metadata.index:
            self._violate(
                "snapshot", f"node {node.id}: snapshot data at {index} != {snap.metadata.index}"
            )
        self._check_oracle_hash(node, index, digest)
        return index, digest

    # -- checks --------------------------------------------------------------------------

    def _violate(self, kind: str, detail: str) -> None:
        raise SafetyViolation(Violation(kind, self.round, detail))

    def _check_oracle_hash(self, node: SimNode, index: int, digest: int) -> None:
        if index <= self.oracle.last_index() and self.oracle.hashes[index] != digest:
            self._violate(
                "state machine safety",
                f"node {node.id} holds state at index {index} that differs from what others applied",
            )

    def _apply(self, node: SimNode, entry: Entry) -> None:
        if entry.index != node.applied + 1:
            self._violate(
                "applied prefix", f"node {node.id} applied {entry.index} after {node.applied}"
            )
        node.applied = entry.index
        node.app_hash = _chain(node.app_hash, entry.term, entry.data)
        oracle = self.oracle
        term_now = node.raw.term if node.raw is not None else 0
        if entry.index <= oracle.last_index():
            if (
                oracle.hashes[entry.index] != node.app_hash
                or oracle.terms[entry.index] != entry.term
            ):
                self._violate(
                    "state machine safety",
                    f"node {node.id} applied index {entry.index} term {entry.term}; another node "
                    f"applied term {oracle.terms[entry.index]} there (or a different prefix)",
                )
            oracle.known_term[entry.index] = min(oracle.known_term[entry.index], term_now)
        elif entry.index == oracle.last_index() + 1:
            # The node's state before this entry was checked against the oracle already.
            self.applied_data.add(entry.data)
            oracle.terms.append(entry.term)
            oracle.hashes.append(node.app_hash)
            oracle.known_term.append(term_now)
        else:
            self._violate(
                "applied prefix",
                f"node {node.id} applied {entry.index} beyond the known sequence {oracle.last_index()}",
            )

    def _check_new_leader(self, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        term = raw.term
        previous = self.leaders.get(term)
        if previous is not None and previous != node.id:
            self._violate(
                "election safety", f"nodes {previous} and {node.id} both lead term {term}"
            )
        if previous == node.id:
            return
        self.leaders[term] = node.id
        self.elections += 1
        self.say(f"round {self.round}: node {node.id} leads term {term}")
        log = raw._raft.log  # the simulator checks the core from inside
        first = log.first_index()
        oracle = self.oracle
        for index in range(1, oracle.last_index() + 1):
            if oracle.known_term[index] >= term:
                continue
            if index < first:
                continue  # inside the leader's snapshot, which was checked when taken
            if log.term_or_zero(index) != oracle.terms[index]:
                self._violate(
                    "leader completeness",
                    f"node {node.id} leads term {term} without committed entry {index} "
                    f"(term {oracle.terms[index]})",
                )

    def _check_applied_kept(self, node: SimNode, entries: list[Entry]) -> None:
        """What a node applied is final: its log may never replace such an entry."""
        mirror = node.mirror
        for e in entries:
            if e.index > node.applied:
                break
            held = mirror.term(e.index) if e.index > mirror.base_index else None
            if held is not None and held != e.term:
                self._violate(
                    "applied entry overwritten",
                    f"node {node.id} applied index {e.index} (term {held}) and is told "
                    f"to replace it by term {e.term}",
                )

    def _check_log_matching(self) -> None:
        nodes = list(self.nodes.values())
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                _check_pair(self, a, b)

    # -- network -------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        rng = self.rng
        if (m.sender, m.to) in self.cut or rng.random() < self.drop_rate:
            if isinstance(m, InstallSnapshot):
                self.snapshot_reports.append((self.round + 1, m.sender, m.to, False))
            return
        if isinstance(m, InstallSnapshot):
            self.snapshot_reports.append((self.round + self.opts.max_delay, m.sender, m.to, True))
        copies = 2 if rng.random() < self.opts.duplicate_rate else 1
        for _ in range(copies):
            self.msg_seq += 1
            at = self.round + rng.randint(1, self.opts.max_delay)
            self.in_flight.append((at, self.msg_seq, m))

    def _due(self) -> dict[int, list[Message]]:
        due: dict[int, list[Message]] = {}
        keep = []
        for item in self.in_flight:
            if item[0] <= self.round:
                due.setdefault(item[2].to, []).append(item[2])
            else:
                keep.append(item)
        self.in_flight = keep
        for msgs in due.values():
            self.rng.shuffle(msgs)  # reordering
        return due

    # -- node cycle ----------------------------------------------------------------------

    def _crash(self, node: SimNode, why: str) -> None:
        node.raw = None
        node.deferred_hs = None
        if self.rng.random() < self.opts.quick_restart_rate:
            node.down_until = self.round + self.rng.randint(1, 3)
        else:
            node.down_until = self.round + self.rng.randint(*self.opts.restart_after)
        self.crashes += 1
        self.say(f"round {self.round}: node {node.id} crashes ({why})")

    def _cycle(self, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        if not raw.has_ready():
            return
        rd = raw.ready()
        if rd.hard_state is not None:
            # A node's commit index only ever covers committed entries, whether or not
            # this ready is persisted.
            self.max_commit = max(self.max_commit, rd.hard_state.commit)
        sent_early = (self.send_early and rd.send_before_persist) or (
            self.opts.bugs.ack_before_persist
        )
        if sent_early:
            for m in rd.messages:
                self._send(m)
            rest: list[Message] = []
        elif self.opts.bugs.vote_before_persist:
            early = [m for m in rd.messages if isinstance(m, RequestVoteResponse) and not m.reject]
            for m in early:
                self._send(m)
            rest = [m for m in rd.messages if m not in early]
        else:
            rest = rd.messages
        crash_rate = self.opts.crash_mid_cycle_rate
        if rd.hard_state is not None and rd.hard_state.vote != node.storage.hard_state.vote:
            crash_rate = max(crash_rate, self.opts.crash_at_vote_rate)
        if sent_early and rd.entries and rd.messages:
            crash_rate = max(crash_rate, self.opts.crash_after_early_send_rate)
        if self.rng.random() < crash_rate:
            self._crash(node, "before persisting a ready")
            return
        storage = node.storage
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
            node.applied, node.app_hash = self._decode_snapshot(node, rd.snapshot)
            node.mirror.reset(node.applied, rd.snapshot.metadata.term, node.app_hash)
            self.snapshots_sent += 1
        if rd.entries:
            self._check_applied_kept(node, rd.entries)
            storage.append(rd.entries)
            node.mirror.append(rd.entries)
        if rd.hard_state is not None and self.defer_commit and rd.commit_only:
            node.deferred_hs = rd.hard_state
        elif rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
            node.deferred_hs = None
        elif node.deferred_hs is not None and (rd.entries or rd.snapshot is not None):
            storage.set_hard_state(node.deferred_hs)  # it rides with the next write
            node.deferred_hs = None
        if (
            rd.soft_state is not None
            and rd.soft_state.role == Role.LEADER
            and self.rng.random() < self.opts.crash_new_leader_before_send_rate
        ):
            self._crash(node, "new leader, after persisting, before sending")
            return
        new_leader_commit = (
            raw.is_leader()
            and bool(rd.committed_entries)
            and rd.committed_entries[0].term < raw.term
            and self.rng.random() < self.opts.crash_after_new_leader_commit_rate
        )
        if self.apply_before_send:
            # Hosts may apply before sending: the entries are committed either way.
            for entry in rd.committed_entries:
                self._apply(node, entry)
            if new_leader_commit:
                self._crash(node, "after applying earlier terms' entries, before sending")
                return
            for out in rest:
                self._send(out)
        else:
            for out in rest:
                self._send(out)
            for entry in rd.committed_entries:
                self._apply(node, entry)
        self._check_reads(node, rd.read_states)
        raw.advance(rd)
        if raw.is_leader():
            self._check_new_leader(node)
        self._maybe_snapshot(node)
        if new_leader_commit:
            self._crash(node, "right after committing earlier terms' entries")

    def _maybe_snapshot(self, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        storage = node.storage
        if node.applied - storage.snapshot().metadata.index < node.snapshot_every:
            return
        if node.deferred_hs is not None:
            storage.set_hard_state(node.deferred_hs)  # never compact past the stored commit
            node.deferred_hs = None
        data = node.applied.to_bytes(8, "little") + node.app_hash.to_bytes(8, "little")
        storage.create_snapshot(node.applied, raw.conf_state(), data)
        keep = self.rng.randint(0, 10)
        storage.compact(max(storage.first_index() - 1, node.applied - keep))

    # -- faults and workload -------------------------------------------------------------

    def _leader(self) -> SimNode | None:
        best: tuple[SimNode, int] | None = None
        for node in self.nodes.values():
            raw = node.raw
            if raw is not None and raw.is_leader() and (best is None or raw.term > best[1]):
                best = (node, raw.term)
        return best[0] if best else None

    def _propose(self, node: SimNode, data: bytes) -> bool:
        assert node.raw is not None
        try:
            node.raw.propose(data)
        except ProposalError:
            return False
        return True

    def _conf_change(self) -> None:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return
        cs = leader.raw.conf_state()
        if cs.is_joint():
            return
        members = cs.voters | cs.learners
        rng = self.rng
        choice = rng.random()
        change: ConfChange
        new_id = 0
        if choice < 0.35 and len(members) < self.opts.max_members:
            new_id = self._new_id()
            change = add_learner(new_id) if rng.random() < 0.5 else add_voter(new_id)
        elif choice < 0.55 and cs.learners:
            change = add_voter(rng.choice(sorted(cs.learners)))
        elif choice < 0.8 and len(cs.voters) > self.opts.min_voters:
            change = remove_node(rng.choice(sorted(cs.voters)))
        elif len(members) < self.opts.max_members and len(cs.voters) > self.opts.min_voters:
            # Joint consensus: replace one voter by a new one in one step.
            new_id = self._new_id()
            change = ConfChange(
                changes=(
                    ConfChangeSingle(type=ConfChangeType.ADD_VOTER, node_id=new_id),
                    ConfChangeSingle(
                        type=ConfChangeType.REMOVE_NODE, node_id=rng.choice(sorted(cs.voters))
                    ),
                ),
                transition=ConfChangeTransition.JOINT_IMPLICIT,
            )
        else:
            return
        try:
            leader.raw.propose_conf_change(change)
        except (ProposalError, ConfChangeError):
            return
        self.conf_changes += 1
        self.removal_proposed.update(
            c.node_id for c in change.changes if c.type == ConfChangeType.REMOVE_NODE
        )
        self.say(f"round {self.round}: node {leader.id} proposes {change}")
        if new_id:
            # A new member starts empty and learns everything from the leader.
            self._add_node(new_id, MemoryLog())

    def _faults(self) -> None:
        rng = self.rng
        opts = self.opts
        for node in self.nodes.values():
            if node.raw is None:
                if self.round >= node.down_until and node.id not in self.retired:
                    self._start(node)
                    self.say(f"round {self.round}: node {node.id} restarts")
            elif rng.random() < opts.crash_rate:
                self._crash(node, "between cycles")
        if rng.random() < opts.partition_rate:
            ids = sorted(self.nodes)
            leader = self._leader()
            if leader is not None and rng.random() < 0.5:
                side = {leader.id}  # the classic: the leader alone, with its uncommitted tail
            else:
                side = {i for i in ids if rng.random() < 0.5}
            self.cut = {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
            self.say(f"round {self.round}: partition {sorted(side)} | {sorted(set(ids) - side)}")
        elif self.cut and rng.random() < opts.heal_partition_rate:
            self.cut = set()
            self.say(f"round {self.round}: partition healed")
        if rng.random() < opts.conf_change_rate:
            self._conf_change()

    def _workload(self) -> None:
        rng = self.rng
        live = [n for n in self.nodes.values() if n.raw is not None]
        if not live:
            return
        if rng.random() < self.opts.propose_rate:
            node = rng.choice(live)
            self.proposal_seq += 1
            self._propose(node, b"p%d" % self.proposal_seq)
        if rng.random() < self.opts.read_rate:
            node = rng.choice(live)
            assert node.raw is not None
            self.read_seq += 1
            context = b"r%d" % self.read_seq
            try:
                node.raw.read_index(context)
            except ProposalError:
                return
            # Everything committed (so anything acknowledged to a client, or applied
            # anywhere) before the read began must be visible to it.
            self.reads[context] = (max(self.max_commit, self.oracle.last_index()), self.round)
        if rng.random() < self.opts.transfer_rate:
            leader = self._leader()
            if leader is not None and leader.raw is not None:
                voters = sorted(leader.raw.conf_state().voters - {leader.id})
                if voters:
                    target = rng.choice(voters)
                    leader.raw.transfer_leader(target)
                    self.transfers += 1
                    self.say(f"round {self.round}: node {leader.id} transfers to {target}")

    def _check_reads(self, node: SimNode, read_states: list[ReadState]) -> None:
        for rs in read_states:
            issued = self.reads.get(rs.context)
            if issued is None:
                self._violate("read index", f"node {node.id} got an unknown read {rs.context!r}")
                continue
            floor, asked_in = issued
            if rs.index < floor:
                self._violate(
                    "linearizable read",
                    f"node {node.id}: read {rs.context!r} at index {rs.index}, but index "
                    f"{floor} was committed before the read began "
                    f"({self.read_only.name} reads)",
                )
            self.reads_served += 1
            # Asked before this round's ticks: answered now means no heartbeat round.
            self.reads_at_once += asked_in == self.round - 1

    def _report_snapshots(self) -> None:
        waiting = []
        for item in self.snapshot_reports:
            at, leader, follower, delivered = item
            if at > self.round:
                waiting.append(item)
                continue
            raw = self.nodes[leader].raw
            if raw is not None:
                raw.report_snapshot(follower, success=delivered)
        self.snapshot_reports = waiting

    def _round(self) -> None:
        self.round += 1
        self._report_snapshots()
        due = self._due()
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            raw = node.raw
            if raw is None:
                continue
            raw.tick()
            for m in due.get(node_id, ()):
                raw.step(m)
            self._cycle(node)
        self._check_log_matching()

    # -- the run -------------------------------------------------------------------------

    def run(self) -> SeedResult:
        violation = None
        try:
            for _ in range(self.opts.rounds):
                self._faults()
                self._workload()
                self._round()
            self._heal_and_check_liveness()
        except SafetyViolation as exc:
            violation = exc.violation
        except InternalError as exc:
            # The core caught an impossible state itself (a log that contradicts what
            # it was told was persisted, ...): a failing seed like any other.
            violation = Violation("core invariant", self.round, str(exc))
        return SeedResult(
            seed=self.seed,
            violation=violation,
            committed=self.oracle.last_index(),
            rounds=self.round,
            elections=self.elections,
            crashes=self.crashes,
            conf_changes=self.conf_changes,
            snapshots_sent=self.snapshots_sent,
            reads_served=self.reads_served,
            reads_at_once=self.reads_at_once,
            lease_reads=self.read_only == ReadOnlyOption.LEASE_BASED,
            transfers=self.transfers,
        )

    def _heal_and_check_liveness(self) -> None:
        self.cut = set()
        self.drop_rate = 0.0
        self.opts = replace(
            self.opts,
            crash_mid_cycle_rate=0.0,
            crash_at_vote_rate=0.0,
            crash_after_new_leader_commit_rate=0.0,
            crash_new_leader_before_send_rate=0.0,
            crash_after_early_send_rate=0.0,
            duplicate_rate=0.0,
        )
        for node in self.nodes.values():
            if node.raw is None and node.id not in self.retired:
                self._start(node)
        self.say(f"round {self.round}: all faults healed")
        deadline = self.round + self.opts.heal_rounds
        fresh = [b"fresh-%d" % i for i in range(3)]
        proposed_to: tuple[int, int] | None = None  # (leader, term) the fresh data went to
        proposed_at = 0
        while self.round < deadline:
            self._round()
            leader = self._leader()
            if leader is None or leader.raw is None:
                continue
            self._retire_non_members(leader)
            if self._all_members_applied(leader, fresh):
                return
            # A client retries what is not applied yet: after a leader change, or when
            # the proposal seems lost.
            target = (leader.id, leader.raw.term)
            if target != proposed_to or self.round - proposed_at > 50:
                for data in fresh:
                    if data not in self.applied_data:
                        self._propose(leader, data)
                proposed_to, proposed_at = target, self.round
        leader = self._leader()
        self._violate(
            "liveness",
            f"no leader committed fresh proposals to every member within "
            f"{self.opts.heal_rounds} rounds after healing (leader: "
            f"{leader.id if leader else None})",
        )

    def _retire_non_members(self, leader: SimNode) -> None:
        assert leader.raw is not None
        cs = leader.raw.conf_state()
        if cs.is_joint():
            return
        for node in self.nodes.values():
            if (
                node.id in self.removal_proposed
                and node.id not in cs.members()
                and node.id not in self.retired
            ):
                self.retired.add(node.id)
                node.raw = None

    def _all_members_applied(self, leader: SimNode, fresh: list[bytes]) -> bool:
        assert leader.raw is not None
        cs = leader.raw.conf_state()
        oracle_len = self.oracle.last_index()
        if oracle_len == 0:
            return False
        applied_all = all(
            self.nodes[m].applied >= oracle_len and self.nodes[m].raw is not None
            for m in cs.members()
        )
        return applied_all and self._fresh_committed(fresh)

    def _fresh_committed(self, fresh: list[bytes]) -> bool:
        return all(d in self.applied_data for d in fresh)


def _bootstrap(voters: list[int], learners: list[int]) -> MemoryLog:
    """A member's log of a new group: `bootstrap_entries` for the voters, then one
    committed `ADD_LEARNER` change per learner, all at term 1."""
    log = MemoryLog.bootstrap(voters)
    index = log.last_index()
    log.append(
        [
            Entry(term=1, index=index + i, kind=EntryKind.CONF_CHANGE, data=add_learner(n).encode())
            for i, n in enumerate(learners, start=1)
        ]
    )
    log.set_hard_state(HardState(term=1, commit=log.last_index()))
    return log


def _check_pair(sim: Simulation, a: SimNode, b: SimNode) -> None:
    """Log matching: find the highest index where both logs hold the same term; the
    hash chains must agree there (and so on every index below it)."""
    ma, mb = a.mirror, b.mirror
    floor = max(ma.base_index, mb.base_index)
    index = min(ma.last_index(), mb.last_index())
    while index >= floor:
        term = ma.term(index)
        if term is not None and term == mb.term(index):
            if ma.hash_at(index) != mb.hash_at(index):
                sim._violate(
                    "log matching",
                    f"nodes {a.id} and {b.id} both hold term {term} at index {index} "
                    "but their logs differ up to it",
                )
            return
        index -= 1


def run_seeds(
    seeds: Iterable[int],
    options: SimOptions,
    *,
    stop_at_first: bool = False,
    progress: Callable[[SeedResult], None] | None = None,
) -> list[SeedResult]:
    results = []
    for seed in seeds:
        result = Simulation(seed, options).run()
        results.append(result)
        if progress is not None:
            progress(result)
        if stop_at_first and result.violation is not None:
            break
    return results


DEFAULT_PROFILE = SimOptions()

HOSTILE_PROFILE = SimOptions(
    max_voters=3,
    partition_rate=0.01,
    heal_partition_rate=0.05,
    crash_rate=0.006,
    crash_at_vote_rate=0.4,
    quick_restart_rate=0.7,
    crash_new_leader_before_send_rate=0.3,
    crash_after_new_leader_commit_rate=0.5,
    crash_after_early_send_rate=0.05,
    max_msg_bytes_choices=(1,),
    apply_before_send_rate=1.0,
    voter_choices=(3,),
)
"""Faults concentrated on raft's dangerous moments (a vote being recorded, a new
leader's first entry and first commit, a write its messages left before), one entry
per append, three voters: the profile that makes the deliberate bugs show within the
first 200 seeds (`PROFILE_FOR_BUG` names the exceptions)."""

FEW_VOTERS_PROFILE = replace(HOSTILE_PROFILE, voter_choices=(1, 2))
"""The hostile faults on three members of which one or two vote, the others learners:
a leader that alone is a quorum, or one that needs every voter."""

LEASE_PROFILE = replace(
    DEFAULT_PROFILE,
    check_quorum_rate=1.0,
    lease_read_rate=1.0,
    read_rate=0.5,
    partition_rate=0.02,
    voter_choices=(3, 5),
    max_delay=1,
)
"""The default faults on groups of three or five voters that all read with leases
(`LEASE_BASED`, check-quorum on), reading in half the rounds and partitioning five
times as often, with every message arriving in the next round: elections then finish
while a leader cut off from the others still believes it leads (its check-quorum steps
it down only after one to two election timeouts), the moment a lease must cover."""

PROFILES = {
    "default": DEFAULT_PROFILE,
    "hostile": HOSTILE_PROFILE,
    "few_voters": FEW_VOTERS_PROFILE,
    "lease": LEASE_PROFILE,
}

PROFILE_FOR_BUG = {bug: "hostile" for bug in BUG_NAMES} | {
    "early_send_lone_leader": "few_voters",
    "stale_lease_reads": "lease",
}
"""The profile that shows each deliberate bug within 200 seeds (a lone leader needs a
group of one voter; a stale lease read, groups that read with leases)."""


def options_for_bug(bug: str | None, base: SimOptions | None = None) -> SimOptions:
    base = base or SimOptions()
    if bug is None:
        return base
    if bug not in BUG_NAMES:
        raise ValueError(f"unknown bug {bug!r}; choose one of {', '.join(BUG_NAMES)}")
    return replace(base, bugs=DeliberateBugs(**{bug: True}))


def _stderr_logger(seed: int) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(f"seed {seed}: {line}", file=sys.stderr)

    return say


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m copycat.testing.raftsim", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seeds", type=int, default=100, help="run seeds 0..N-1 (default 100)")
    parser.add_argument("--first-seed", type=int, default=0, help="start at this seed")
    parser.add_argument("--seed", type=int, help="replay one seed, logging what happens")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="fault rounds per seed")
    parser.add_argument("--bug", choices=BUG_NAMES, help="turn on a deliberate bug")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="default",
        help="fault profile (hostile: faults aimed at raft's dangerous moments; "
        "few_voters: the same on one or two voters plus learners; lease: the same on "
        "groups that read with leases)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every event of each seed")
    args = parser.parse_args(argv)
    options = options_for_bug(args.bug, replace(PROFILES[args.profile], rounds=args.rounds))
    started = time.monotonic()
    if args.seed is not None:
        seeds: list[int] = [args.seed]
        verbose = True
    else:
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        verbose = args.verbose
    results = []
    for seed in seeds:
        result = Simulation(seed, options, _stderr_logger(seed) if verbose else None).run()
        results.append(result)
        if result.violation is not None:
            print(
                f"seed {seed}: VIOLATION {result.violation} -- replay with --seed {seed}",
                file=sys.stderr,
            )
        elif len(seeds) > 1 and (len(results) % 10 == 0 or len(results) == len(seeds)):
            print(f"{len(results)}/{len(seeds)} seeds ok", file=sys.stderr)
    failing = [r.seed for r in results if r.violation is not None]
    summary = {
        "seeds": len(results),
        "violations": len(failing),
        "failing_seeds": failing,
        "committed": sum(r.committed for r in results),
        "elections": sum(r.elections for r in results),
        "crashes": sum(r.crashes for r in results),
        "conf_changes": sum(r.conf_changes for r in results),
        "snapshots_installed": sum(r.snapshots_sent for r in results),
        "reads_served": sum(r.reads_served for r in results),
        "reads_at_once": sum(r.reads_at_once for r in results),
        "lease_read_seeds": sum(r.lease_reads for r in results),
        "transfers": sum(r.transfers for r in results),
        "bug": args.bug,
        "profile": args.profile,
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    print(json.dumps(summary))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
