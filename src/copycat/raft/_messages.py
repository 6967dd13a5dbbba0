"""Plain data of the raft core: log entries, persistent state, snapshots and messages.

What lives here: frozen, slotted dataclasses and the enums that tag them. Nothing here
does work beyond tiny helpers; the state machine lives in `_raft.py`.

What must not: I/O of any kind, and changes to existing enum values. `MessageType`,
`EntryKind` and `ConfChangeType` are wire and disk tables: append new values, never
renumber.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Final

import msgpack

from copycat.errors import ConfChangeError

NONE: Final = 0
"""The node id that means "nobody" (no vote, no known leader). Real ids are non-zero."""

ENTRY_OVERHEAD_BYTES: Final = 16
"""Bytes counted per entry on top of its data, for every byte-bounded limit."""


class EntryKind(IntEnum):
    """What an entry's `data` holds. Append-only table."""

    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One slot of the replicated log."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


def entry_size(entry: Entry) -> int:
    """Bytes an entry counts for against the byte limits."""
    return len(entry.data) + ENTRY_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True, kw_only=True)
class HardState:
    """What a node must persist before it sends any message that depends on it."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


EMPTY_HARD_STATE: Final = HardState()


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfState:
    """A group's membership: voters (and, in a joint configuration, the outgoing
    voters) and learners. `learners_next` are voters of the outgoing configuration
    that become learners when the joint configuration is left."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()
    voters_outgoing: frozenset[int] = frozenset()
    learners_next: frozenset[int] = frozenset()
    auto_leave: bool = False

    def is_joint(self) -> bool:
        return bool(self.voters_outgoing)

    def members(self) -> frozenset[int]:
        return self.voters | self.voters_outgoing | self.learners | self.learners_next


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMetadata:
    """Where a snapshot sits in the log and the membership as of that point."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The state machine's state at `metadata.index`, as opaque bytes."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT: Final = Snapshot()


class ConfChangeType(IntEnum):
    """One membership step. Append-only table."""

    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


class ConfChangeTransition(IntEnum):
    """How a change of more than one member is carried out (thesis §4.3).

    AUTO: one change is applied directly; several enter a joint configuration that the
    leader leaves by itself once the change is applied. JOINT_IMPLICIT: always go
    through a joint configuration and leave it automatically. JOINT_EXPLICIT: go through
    a joint configuration and stay until an empty `ConfChange` is proposed.
    """

    AUTO = 0
    JOINT_IMPLICIT = 1
    JOINT_EXPLICIT = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfChangeSingle:
    """Add a voter, add a learner (or demote a voter), or remove a node."""

    type: ConfChangeType
    node_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfChange:
    """A membership change. No `changes` at all means: leave the joint configuration."""

    changes: tuple[ConfChangeSingle, ...] = ()
    transition: ConfChangeTransition = ConfChangeTransition.AUTO
    context: bytes = b""

    def leaves_joint(self) -> bool:
        return not self.changes

    def uses_joint(self) -> bool:
        """Whether applying this change enters a joint configuration; and whether
        the leader should leave it by itself afterwards."""
        return self.transition != ConfChangeTransition.AUTO or len(self.changes) > 1

    def auto_leave(self) -> bool:
        return self.transition != ConfChangeTransition.JOINT_EXPLICIT

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [
                1,
                int(self.transition),
                [[int(c.type), c.node_id] for c in self.changes],
                self.context,
            ]
        )
        return packed

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Parse an encoded change; raises `ConfChangeError` on anything malformed."""
        try:
            raw = msgpack.unpackb(data)
            version, transition, changes, context = raw
            if version != 1 or not isinstance(context, bytes):
                raise ValueError(f"unsupported conf change version {version!r}")
            if type(transition) is not int or not isinstance(changes, list):
                raise ValueError("transition must be an int and changes a list")
            singles = []
            for change in changes:
                if not isinstance(change, list) or len(change) != 2:
                    raise ValueError(f"a change must be a [type, node_id] pair, got {change!r}")
                kind, node_id = change
                if type(kind) is not int or type(node_id) is not int or node_id <= 0:
                    raise ValueError(f"bad change {change!r}: ints and a positive node id")
                singles.append(ConfChangeSingle(type=ConfChangeType(kind), node_id=node_id))
            return cls(
                transition=ConfChangeTransition(transition),
                changes=tuple(singles),
                context=context,
            )
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ConfChangeError(f"malformed conf change entry: {exc}") from exc


def add_voter(node_id: int) -> ConfChange:
    """A change adding one voter (or promoting a learner)."""
    return ConfChange(changes=(ConfChangeSingle(type=ConfChangeType.ADD_VOTER, node_id=node_id),))


def add_learner(node_id: int) -> ConfChange:
    """A change adding one learner (or demoting a voter)."""
    return ConfChange(changes=(ConfChangeSingle(type=ConfChangeType.ADD_LEARNER, node_id=node_id),))


def remove_node(node_id: int) -> ConfChange:
    """A change removing one node."""
    return ConfChange(changes=(ConfChangeSingle(type=ConfChangeType.REMOVE_NODE, node_id=node_id),))


class MessageType(IntEnum):
    """Wire tag of each message class. Append-only table."""

    REQUEST_VOTE = 1
    REQUEST_VOTE_RESPONSE = 2
    APPEND_ENTRIES = 3
    APPEND_ENTRIES_RESPONSE = 4
    HEARTBEAT = 5
    HEARTBEAT_RESPONSE = 6
    INSTALL_SNAPSHOT = 7
    TIMEOUT_NOW = 8
    PROPOSE = 9
    READ_INDEX = 10
    READ_INDEX_RESPONSE = 11
    TRANSFER_LEADER = 12


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Fields every message carries. A `term` of 0 marks a message that is not bound
    to a term (forwarded proposals, read requests and transfer requests)."""

    TYPE: ClassVar[MessageType]
    term: int
    sender: int
    to: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote(Message):
    """A candidate asks for a vote (§5.2), or a pre-candidate asks whether it would get
    one (thesis §9.6, `pre_vote`); `transfer` marks a campaign a leader asked for
    (thesis §3.10), which ignores leader leases."""

    TYPE: ClassVar[MessageType] = MessageType.REQUEST_VOTE
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteResponse(Message):
    """A vote (or pre-vote) granted or refused; a refusal carries the voter's term."""

    TYPE: ClassVar[MessageType] = MessageType.REQUEST_VOTE_RESPONSE
    reject: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries(Message):
    """Entries following (`prev_index`, `prev_term`), and the leader's commit index."""

    TYPE: ClassVar[MessageType] = MessageType.APPEND_ENTRIES
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...] = ()
    commit: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntriesResponse(Message):
    """On success `index` is the last index known to match the leader. On rejection
    `index` is the rejected `prev_index`, and (`hint_index`, `hint_term`) is the
    follower's guess at the last entry that could match (fast back-off)."""

    TYPE: ClassVar[MessageType] = MessageType.APPEND_ENTRIES_RESPONSE
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(Message):
    """Leader liveness; `commit` never exceeds what the follower is known to hold.
    `context` carries a ReadIndex round, if any."""

    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT
    commit: int = 0
    context: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse(Message):
    """A follower's answer to a heartbeat, echoing its ReadIndex context."""

    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT_RESPONSE
    context: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot(Message):
    """The leader ships its snapshot to a follower whose next entry was compacted away."""

    TYPE: ClassVar[MessageType] = MessageType.INSTALL_SNAPSHOT
    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow(Message):
    """The leader tells an up-to-date follower to campaign at once (leader transfer)."""

    TYPE: ClassVar[MessageType] = MessageType.TIMEOUT_NOW


@dataclass(frozen=True, slots=True, kw_only=True)
class Propose(Message):
    """Proposals forwarded from a follower or learner to the leader."""

    TYPE: ClassVar[MessageType] = MessageType.PROPOSE
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndex(Message):
    """A linearizable read request forwarded to the leader."""

    TYPE: ClassVar[MessageType] = MessageType.READ_INDEX
    context: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexResponse(Message):
    """The leader's answer to a forwarded read: serve it once `index` is applied."""

    TYPE: ClassVar[MessageType] = MessageType.READ_INDEX_RESPONSE
    index: int
    context: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferLeader(Message):
    """A request, forwarded to the leader, to hand leadership to `target`."""

    TYPE: ClassVar[MessageType] = MessageType.TRANSFER_LEADER
    target: int


MESSAGE_CLASSES: Final[dict[MessageType, type[Message]]] = {
    cls.TYPE: cls
    for cls in (
        RequestVote,
        RequestVoteResponse,
        AppendEntries,
        AppendEntriesResponse,
        Heartbeat,
        HeartbeatResponse,
        InstallSnapshot,
        TimeoutNow,
        Propose,
        ReadIndex,
        ReadIndexResponse,
        TransferLeader,
    )
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadState:
    """A linearizable read may be served once `index` is applied locally."""

    index: int
    context: bytes
