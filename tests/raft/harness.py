"""A deterministic in-memory network of `RawNode`s for the raft core's unit tests.

Each node owns a `MemoryLog` and a toy state machine (the list of the data of the
normal entries it applied). The network follows the ready contract of `RawNode`
exactly: persist the snapshot, entries and hard state into the `MemoryLog`, then send
the messages, then install the snapshot and apply the committed entries, then
`advance`. Messages wait in one FIFO queue until `deliver()` hands them over, so a
test can look at (or take away) what is in flight at any point.

Nothing here is random and nothing depends on time: the same calls give the same
messages in the same order every run. Faults are explicit: `isolate`/`cut` sever
links, `drop` removes matching messages, `intercept` rewrites them, `restart` loses
all volatile state, and `heal` undoes the network faults.

A new group starts from `MemoryLog.bootstrap(voters)`: its first entries are the
committed membership changes that add each voter, at term 1. The constructor applies
them (a node with unapplied membership changes will not campaign) and returns a group
of followers at term 1 with no leader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgpack

from copycat.raft import (
    ConfState,
    DeliberateBugs,
    Entry,
    EntryKind,
    HardState,
    Message,
    RaftConfig,
    RawNode,
    ReadState,
    Ready,
    Role,
    Snapshot,
    add_learner,
    bootstrap_entries,
)
from copycat.raft import MemoryLog as MemoryLog
from copycat.raft._bugs import NO_BUGS

Intercept = Callable[[Message], "Message | None"]
"""Sees every message as it is sent; returns it (possibly rewritten) or None to drop it."""

M = TypeVar("M", bound=Message)

DEFAULT_KNOBS: dict[str, Any] = {"election_ticks": 10, "heartbeat_ticks": 1}


def entry_data(index: int, term: int) -> bytes:
    """The data `make_log` gives the entry at (index, term): distinct per slot."""
    return f"i{index}t{term}".encode()


def make_log(
    voters: Iterable[int],
    terms: Iterable[int] = (),
    *,
    term: int | None = None,
    learners: Iterable[int] = (),
    vote: int = 0,
) -> MemoryLog:
    """A persisted log for one member of a group with these `voters` (and `learners`):
    the bootstrap membership entries (term 1, committed), then one normal entry per
    item of `terms`, with the term given there. The hard state's term is `term`
    (default: the last entry's term) and its commit index covers the membership
    entries only."""
    entries = bootstrap_entries(sorted(voters))
    for learner in sorted(learners):
        entries.append(
            Entry(
                term=1,
                index=len(entries) + 1,
                kind=EntryKind.CONF_CHANGE,
                data=add_learner(learner).encode(),
            )
        )
    committed = len(entries)
    for t in terms:
        index = len(entries) + 1
        entries.append(Entry(term=t, index=index, data=entry_data(index, t)))
    log = MemoryLog()
    log.append(entries)
    hard_term = term if term is not None else entries[-1].term
    log.set_hard_state(HardState(term=hard_term, vote=vote, commit=committed))
    return log


class Node:
    """One member: its `RawNode`, its durable log and its toy state machine."""

    def __init__(
        self,
        node_id: int,
        storage: MemoryLog,
        config: RaftConfig,
        bugs: DeliberateBugs = NO_BUGS,
    ) -> None:
        self.id = node_id
        self.storage = storage
        self.config = config
        self.bugs = bugs
        self.raw = RawNode(config, storage, bugs=bugs)
        self.data: list[bytes] = []
        """The state machine: data of each applied normal entry (empty entries skipped)."""
        self.applied: list[Entry] = []
        """Every entry applied since the last (re)start or snapshot, in order."""
        self.applied_index = 0
        self.read_states: list[ReadState] = []
        self.readies: list[Ready] = []
        """Every `Ready` this node handled, in order (for checks on what was persisted)."""
        self.snapshots_installed: list[Snapshot] = []
        self.conf_states: list[ConfState] = [self.raw.conf_state()]
        """The membership after each `advance` that changed it."""
        self._restore_state_machine(storage.snapshot())

    # -- the state machine ------------------------------------------------------------

    def _restore_state_machine(self, snapshot: Snapshot) -> None:
        if snapshot.is_empty():
            self.data = []
            self.applied_index = 0
            return
        self.data = list(msgpack.unpackb(snapshot.data))
        self.applied_index = snapshot.metadata.index

    def _apply(self, entry: Entry) -> None:
        if entry.index != self.applied_index + 1:
            raise AssertionError(
                f"node {self.id} applies entry {entry.index} after {self.applied_index}"
            )
        self.applied_index = entry.index
        self.applied.append(entry)
        if entry.kind == EntryKind.NORMAL and entry.data:
            self.data.append(entry.data)

    # -- the ready cycle -------------------------------------------------------------------

    def handle_ready(self, send: Callable[[Message], None]) -> bool:
        """One turn of the ready contract; False when there was nothing to do."""
        raw = self.raw
        if not raw.has_ready():
            return False
        rd = raw.ready()
        self.readies.append(rd)
        # a. persist: snapshot, entries, hard state.
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        # b. send.
        for m in rd.messages:
            send(m)
        # c. install the snapshot, then apply the committed entries in order.
        if rd.snapshot is not None:
            self.snapshots_installed.append(rd.snapshot)
            self._restore_state_machine(rd.snapshot)
        for entry in rd.committed_entries:
            self._apply(entry)
        # d. read states (the toy state machine is always applied far enough here).
        self.read_states.extend(rd.read_states)
        # e. advance.
        raw.advance(rd)
        conf = raw.conf_state()
        if conf != self.conf_states[-1]:
            self.conf_states.append(conf)
        return True

    # -- views -------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self.raw.role

    @property
    def term(self) -> int:
        return self.raw.term

    @property
    def commit(self) -> int:
        return self.raw.status().commit

    def log(self) -> list[Entry]:
        """Every entry still in the durable log (after the last snapshot)."""
        s = self.storage
        return s.entries(s.first_index(), s.last_index() + 1)

    def log_terms(self) -> list[int]:
        """The term of each entry in the durable log, in index order."""
        return [e.term for e in self.log()]

    def last_index(self) -> int:
        return self.storage.last_index()


class Network:
    """A group of nodes and the messages between them (see the module docstring)."""

    def __init__(
        self,
        voters: Iterable[int] = (1, 2, 3),
        *,
        learners: Iterable[int] = (),
        logs: dict[int, MemoryLog] | None = None,
        bugs: DeliberateBugs = NO_BUGS,
        **knobs: Any,
    ) -> None:
        """`knobs` are `RaftConfig` fields given to every node (`node_id` aside);
        `bugs` turns on deliberate bugs in every node, to show that a test can fail."""
        self.bugs = bugs
        self.voters = sorted(voters)
        self.learners = sorted(learners)
        self.knobs = {**DEFAULT_KNOBS, **knobs}
        self.nodes: dict[int, Node] = {}
        self.inflight: list[Message] = []
        self.sent: list[Message] = []
        """Every message any node sent, before faults were applied."""
        self.dropped: list[Message] = []
        self._cuts: set[tuple[int, int]] = set()
        self._intercepts: list[Intercept] = []
        logs = logs or {}
        for node_id in [*self.voters, *self.learners]:
            storage = logs.get(node_id) or make_log(self.voters, learners=self.learners)
            self.add_node(node_id, storage)
        self.stabilize()

    # -- membership of the simulation --------------------------------------------------------

    def config_for(self, node_id: int, **knobs: Any) -> RaftConfig:
        return RaftConfig(node_id=node_id, **{**self.knobs, **knobs})

    def add_node(self, node_id: int, storage: MemoryLog | None = None, **knobs: Any) -> Node:
        """Start a node; by default with an empty log (a member joining the group)."""
        if node_id in self.nodes:
            raise ValueError(f"node {node_id} already exists")
        node = Node(
            node_id,
            storage if storage is not None else MemoryLog(),
            self.config_for(node_id, **knobs),
            self.bugs,
        )
        self.nodes[node_id] = node
        return node

    def restart(self, node_id: int) -> Node:
        """Crash and restart a node: everything not persisted (role, leader, progress,
        unsent messages, the state machine) is lost; the node is rebuilt from its
        `MemoryLog` and replays the committed entries after its snapshot."""
        old = self.nodes[node_id]
        node = Node(node_id, old.storage, old.config, old.bugs)
        self.nodes[node_id] = node
        return node

    # -- access ------------------------------------------------------------------------------

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def raw(self, node_id: int) -> RawNode:
        return self.nodes[node_id].raw

    def leaders(self) -> list[int]:
        return sorted(i for i, n in self.nodes.items() if n.role == Role.LEADER)

    def data(self, node_id: int) -> list[bytes]:
        """What node `node_id`'s state machine holds (the applied normal entries)."""
        return self.nodes[node_id].data

    # -- faults --------------------------------------------------------------------------------

    def cut(self, a: int, b: int) -> None:
        """Sever the link between `a` and `b`, both ways."""
        self._cuts.add((a, b))
        self._cuts.add((b, a))

    def isolate(self, node_id: int) -> None:
        """Sever every link of `node_id`."""
        for other in self.nodes:
            if other != node_id:
                self.cut(node_id, other)

    def drop(self, predicate: Callable[[Message], bool]) -> None:
        """Drop every message sent from now on that matches `predicate`."""
        self._intercepts.append(lambda m: None if predicate(m) else m)

    def intercept(self, rewrite: Intercept) -> None:
        """Pass every message sent from now on through `rewrite`."""
        self._intercepts.append(rewrite)

    def heal(self) -> None:
        """Undo every cut, drop and intercept (messages already lost stay lost)."""
        self._cuts.clear()
        self._intercepts.clear()

    # -- messages ------------------------------------------------------------------------------

    def send(self, m: Message) -> None:
        self.sent.append(m)
        out: Message | None = m
        if (m.sender, m.to) in self._cuts:
            out = None
        for rewrite in self._intercepts:
            if out is None:
                break
            out = rewrite(out)
        if out is None:
            self.dropped.append(m)
        else:
            self.inflight.append(out)

    def take(self, predicate: Callable[[Message], bool] | None = None) -> list[Message]:
        """Remove and return the in-flight messages that match (all by default)."""
        taken = [m for m in self.inflight if predicate is None or predicate(m)]
        self.inflight = [m for m in self.inflight if not (predicate is None or predicate(m))]
        return taken

    def deliver(self, predicate: Callable[[Message], bool] | None = None) -> list[Message]:
        """Step the in-flight messages that match into their recipients, in the order
        they were sent; messages to unknown nodes are lost. Returns them."""
        batch = self.take(predicate)
        for m in batch:
            node = self.nodes.get(m.to)
            if node is None:
                self.dropped.append(m)
                continue
            node.raw.step(m)
        return batch

    def step(self, m: Message) -> None:
        """Hand `m` to its recipient directly (a message a test made up)."""
        self.nodes[m.to].raw.step(m)

    def process(self, node_id: int) -> bool:
        """Run one ready cycle of `node_id`; False when it had nothing to do."""
        return self.nodes[node_id].handle_ready(self.send)

    def process_all(self) -> bool:
        progressed = False
        for node_id in sorted(self.nodes):
            progressed |= self.process(node_id)
        return progressed

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Process readies and deliver messages until nothing is left to do. No clock
        ticks happen meanwhile, so the run ends; `max_rounds` bounds it anyway."""
        for _ in range(max_rounds):
            progressed = self.process_all()
            if self.inflight:
                self.deliver()
                progressed = True
            if not progressed:
                return
        raise AssertionError(f"the network did not stabilize in {max_rounds} rounds")

    # -- time and requests ---------------------------------------------------------------------

    def tick(self, node_id: int, n: int = 1) -> None:
        """Tick one node `n` times, without processing its output."""
        raw = self.nodes[node_id].raw
        for _ in range(n):
            raw.tick()

    def tick_all(self, n: int = 1, *, nodes: Iterable[int] | None = None) -> None:
        """`n` rounds of: tick every node (or those in `nodes`) once, then stabilize."""
        ids = sorted(self.nodes) if nodes is None else sorted(nodes)
        for _ in range(n):
            for node_id in ids:
                self.nodes[node_id].raw.tick()
            self.stabilize()

    def campaign(self, node_id: int) -> None:
        """`node_id` starts an election; everything then runs to quiescence."""
        self.nodes[node_id].raw.campaign()
        self.stabilize()

    def elect(self, node_id: int) -> Node:
        """Make `node_id` campaign and check that it won."""
        self.campaign(node_id)
        node = self.nodes[node_id]
        if node.role != Role.LEADER:
            raise AssertionError(
                f"node {node_id} did not win its election: {node.role.name} at term {node.term}"
            )
        return node

    def propose(self, node_id: int, *items: bytes) -> None:
        """Propose `items` at `node_id` and run to quiescence."""
        raw = self.nodes[node_id].raw
        for data in items:
            raw.propose(data)
        self.stabilize()

    # -- snapshots -------------------------------------------------------------------------------

    def compact(self, node_id: int, *, keep: int = 0) -> Snapshot:
        """Take a snapshot of `node_id`'s state machine at its applied index, then drop
        the log up to `keep` entries before it."""
        node = self.nodes[node_id]
        index = node.applied_index
        snapshot = node.storage.create_snapshot(
            index, node.raw.conf_state(), msgpack.packb(node.data)
        )
        node.storage.compact(index - keep)
        return snapshot


BASIC: dict[str, Any] = {"pre_vote": False, "check_quorum": False}
"""Knobs for the plain algorithm of the paper's §5 (no pre-vote, no leader leases)."""


def of_type(messages: Iterable[Message], cls: type[M]) -> list[M]:
    """The messages of one class, in order."""
    return [m for m in messages if isinstance(m, cls)]
