"""The forced configuration of disaster recovery: what to write into a group's log so
that one surviving member becomes its only voter (etcd's `--force-new-cluster`, our code).

What lives here: `plan_sole_voter`, which reads a member's stored log and returns the
entries and hard state to write (`ForcedConf`), checked by replaying the result through
the raft core before anything is written; `RecoveryRecord`, the mark those entries carry.
What must not: I/O beyond reading the log it is given, asyncio, or the decision whether
to recover (the evidence lives in `_recover.py`).

The plan, for a member whose log ends at `last` (term `last_term`) with hard state
(`term`, `commit`):
1. Every entry the member has is kept, and all of them count as committed: entries past
   its commit index may have been committed by the old majority (the member's commit
   index trails the leader's), so keeping them loses least.
2. The configuration in force at `last` (every configuration change in the log applied,
   committed or not) is changed, one simple change per entry (never a joint
   configuration: its outgoing half would need the dead majority): leave a joint
   configuration first if the log ends in one, add this member as a voter if it is a
   learner, then remove every other voter, one by one. Learners stay.
3. Those entries go at `last + 1 ...` in a new term, `max(term, last_term) + 1`, above every
   term this member has seen: no entry of a dead voter that this member knows of can
   carry that term at those indexes. The hard state becomes (new term, vote: this
   member, commit: the last new entry).
4. Each entry's `ConfChange.context` carries a `RecoveryRecord`, so the group's history
   (every member's log, and every member added later) shows the recovery and what the
   survivor held.
5. The result is replayed through a throwaway `RawNode` (the raft core's own arithmetic;
   every ready ends at a configuration change, so the configuration after each is
   known): it must end with this member the only voter, or nothing is written
   (`InternalError`). The replay reads the log since the latest snapshot once, 1 MiB at
   a time, on the event loop (about 1 s per 100,000 entries of LMDB on a small
   machine), then the recovery entries alone on top of the configuration found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgpack

from copycat.errors import ConfChangeError, InternalError
from copycat.host._raftlog import MetadataOnlyLog
from copycat.raft import (
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    RaftConfig,
    RawNode,
    Snapshot,
    SnapshotMetadata,
    add_voter,
    remove_node,
)

if TYPE_CHECKING:
    from copycat.raft import LogReader
    from copycat.storage import GroupLog

REPLAY_BYTES: Final = 1 << 20
"""Bytes of entries per ready of the throwaway replay (and per read of the log)."""

RECOVERY_MARK: Final = b"copycat.recover/1"
"""First element of a recovery entry's context: tells it from any other change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryRecord:
    """What a recovery entry records: who recovered the group and what it held."""

    node_id: int
    """The surviving member that became the only voter."""
    voters_before: tuple[int, ...]
    """The voters of the configuration it replaced."""
    last_index: int
    """The survivor's last index before the recovery (every entry up to it is kept)."""
    commit_index: int
    """The survivor's commit index before the recovery."""

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [
                RECOVERY_MARK,
                self.node_id,
                list(self.voters_before),
                self.last_index,
                self.commit_index,
            ]
        )
        return packed

    @classmethod
    def of_entry(cls, entry: Entry) -> RecoveryRecord | None:
        """The record a recovery entry carries; None for any other entry."""
        if entry.kind != EntryKind.CONF_CHANGE:
            return None
        try:
            context = ConfChange.decode(entry.data).context
            mark, node_id, voters, last, commit = msgpack.unpackb(context)
        except (ConfChangeError, ValueError, TypeError, msgpack.UnpackException):
            return None
        if mark != RECOVERY_MARK:
            return None
        return cls(
            node_id=int(node_id),
            voters_before=tuple(int(v) for v in voters),
            last_index=int(last),
            commit_index=int(commit),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ForcedConf:
    """The writes that make `node_id` the only voter (see the module docstring)."""

    node_id: int
    before: ConfState
    """The configuration in force at `last_index` (every change in the log applied)."""
    after: ConfState
    last_index: int
    last_term: int
    commit_index: int
    term: int
    """The member's term before the recovery."""
    entries: tuple[Entry, ...]
    hard_state: HardState
    confs: tuple[tuple[int, ConfState], ...]
    """Every configuration-change entry after the latest snapshot, with the
    configuration in force once it is applied (what the host records, `_Group.confs`)."""

    @property
    def new_term(self) -> int:
        return self.hard_state.term

    @property
    def recovery_index(self) -> int:
        """The index of the last recovery entry (the new commit index)."""
        return self.hard_state.commit


class _AllCommitted(MetadataOnlyLog):
    """A member's stored log seen as if all of it were committed (the throwaway replay's
    storage)."""

    __slots__ = ()

    def initial_state(self) -> tuple[HardState, ConfState]:
        hard, conf = self._log.initial_state()
        return HardState(term=hard.term, vote=hard.vote, commit=self.last_index()), conf

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi) bounded by `max_bytes`, cut after the first configuration
        change among them (raft takes a shorter list as cut by the limit): so every
        ready of the replay ends at a change, and the configuration after each is seen."""
        return _through_first_change(self._log.entries(lo, hi, max_bytes))


class _Tail:
    """`entries` committed after a stand-in snapshot at `base` (the configuration
    `before` at the survivor's last entry): the replay of the recovery entries alone."""

    __slots__ = ("_base", "_entries")

    def __init__(self, base: SnapshotMetadata, entries: tuple[Entry, ...]) -> None:
        self._base = base
        self._entries = entries

    def initial_state(self) -> tuple[HardState, ConfState]:
        term = self._entries[-1].term if self._entries else self._base.term
        return HardState(term=term, commit=self.last_index()), self._base.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return _through_first_change([e for e in self._entries if lo <= e.index < hi])

    def term(self, index: int) -> int:
        if index == self._base.index:
            return self._base.term
        return self._entries[index - self._base.index - 1].term

    def first_index(self) -> int:
        return self._base.index + 1

    def last_index(self) -> int:
        return self._base.index + len(self._entries)

    def snapshot(self) -> Snapshot:
        return Snapshot(metadata=self._base)


def _through_first_change(entries: list[Entry]) -> list[Entry]:
    """`entries` up to and including the first configuration change among them."""
    for i, entry in enumerate(entries):
        if entry.kind == EntryKind.CONF_CHANGE:
            return entries[: i + 1]
    return entries


def _replay(node_id: int, reader: LogReader) -> tuple[ConfState, tuple[tuple[int, ConfState], ...]]:
    """Apply every entry of `reader` (each ready ends at a configuration change, see
    `_through_first_change`) and return the final configuration with the one after each
    configuration-change entry."""
    raw = RawNode(RaftConfig(node_id=node_id, max_committed_bytes_per_ready=REPLAY_BYTES), reader)
    confs: list[tuple[int, ConfState]] = []
    while raw.has_ready():
        rd = raw.ready()
        raw.advance(rd)
        confs.extend(
            (entry.index, raw.conf_state())
            for entry in rd.committed_entries
            if entry.kind == EntryKind.CONF_CHANGE
        )
    return raw.conf_state(), tuple(confs)


def plan_sole_voter(group_log: GroupLog, node_id: int, *, term_seen: int = 0) -> ForcedConf:
    """The writes that make `node_id` the only voter of the group whose stored log is
    `group_log` (this node's member); `term_seen` is the member's term in memory (which
    may be ahead of the stored one), and the new term is above it too. Raises
    `InternalError` when the result would not be that (nothing is written then)."""
    hard, _ = group_log.initial_state()
    last = group_log.last_index()
    last_term = group_log.term(last) if last else 0
    before, confs_before = _replay(node_id, _AllCommitted(group_log))
    voters = set(before.voters)
    changes: list[ConfChange] = []
    if before.is_joint():
        changes.append(ConfChange())  # leave the joint configuration: its incoming half
    if node_id not in voters:
        changes.append(add_voter(node_id))
    changes.extend(remove_node(v) for v in sorted(voters - {node_id}))
    record = RecoveryRecord(
        node_id=node_id,
        voters_before=tuple(sorted(before.voters | before.voters_outgoing)),
        last_index=last,
        commit_index=hard.commit,
    ).encode()
    new_term = max(hard.term, last_term, term_seen) + 1
    entries = tuple(
        Entry(
            term=new_term,
            index=last + i,
            kind=EntryKind.CONF_CHANGE,
            data=ConfChange(changes=cc.changes, transition=cc.transition, context=record).encode(),
        )
        for i, cc in enumerate(changes, start=1)
    )
    base = SnapshotMetadata(index=last, term=last_term, conf_state=before)
    after, confs_after = _replay(node_id, _Tail(base, entries))
    if after.voters != {node_id} or after.is_joint() or not entries:
        raise InternalError(
            f"forcing node {node_id} the only voter would leave {after} (from {before}); "
            "nothing was written: please file a report"
        )
    return ForcedConf(
        node_id=node_id,
        before=before,
        after=after,
        last_index=last,
        last_term=last_term,
        commit_index=hard.commit,
        term=hard.term,
        entries=entries,
        hard_state=HardState(term=new_term, vote=node_id, commit=entries[-1].index),
        confs=confs_before + confs_after,
    )
