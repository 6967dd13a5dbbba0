"""The raft consensus core: a deterministic, sans-I/O state machine in the design of
etcd's raft library. See `RawNode` for the contract a host follows."""

from __future__ import annotations

from copycat.raft._bugs import DeliberateBugs as DeliberateBugs
from copycat.raft._config import RaftConfig as RaftConfig
from copycat.raft._config import RandomSource as RandomSource
from copycat.raft._config import ReadOnlyOption as ReadOnlyOption
from copycat.raft._config import SplitMix64 as SplitMix64
from copycat.raft._messages import ENTRY_OVERHEAD_BYTES as ENTRY_OVERHEAD_BYTES
from copycat.raft._messages import MESSAGE_CLASSES as MESSAGE_CLASSES
from copycat.raft._messages import NONE as NONE
from copycat.raft._messages import AppendEntries as AppendEntries
from copycat.raft._messages import AppendEntriesResponse as AppendEntriesResponse
from copycat.raft._messages import ConfChange as ConfChange
from copycat.raft._messages import ConfChangeSingle as ConfChangeSingle
from copycat.raft._messages import ConfChangeTransition as ConfChangeTransition
from copycat.raft._messages import ConfChangeType as ConfChangeType
from copycat.raft._messages import ConfState as ConfState
from copycat.raft._messages import Entry as Entry
from copycat.raft._messages import EntryKind as EntryKind
from copycat.raft._messages import HardState as HardState
from copycat.raft._messages import Heartbeat as Heartbeat
from copycat.raft._messages import HeartbeatResponse as HeartbeatResponse
from copycat.raft._messages import InstallSnapshot as InstallSnapshot
from copycat.raft._messages import Message as Message
from copycat.raft._messages import MessageType as MessageType
from copycat.raft._messages import Propose as Propose
from copycat.raft._messages import ReadIndex as ReadIndex
from copycat.raft._messages import ReadIndexResponse as ReadIndexResponse
from copycat.raft._messages import ReadState as ReadState
from copycat.raft._messages import RequestVote as RequestVote
from copycat.raft._messages import RequestVoteResponse as RequestVoteResponse
from copycat.raft._messages import Snapshot as Snapshot
from copycat.raft._messages import SnapshotMetadata as SnapshotMetadata
from copycat.raft._messages import TimeoutNow as TimeoutNow
from copycat.raft._messages import TransferLeader as TransferLeader
from copycat.raft._messages import add_learner as add_learner
from copycat.raft._messages import add_voter as add_voter
from copycat.raft._messages import entry_size as entry_size
from copycat.raft._messages import remove_node as remove_node
from copycat.raft._progress import ProgressState as ProgressState
from copycat.raft._raft import Role as Role
from copycat.raft._rawnode import ProgressStatus as ProgressStatus
from copycat.raft._rawnode import RawNode as RawNode
from copycat.raft._rawnode import Ready as Ready
from copycat.raft._rawnode import SoftState as SoftState
from copycat.raft._rawnode import Status as Status
from copycat.raft._storage import LogReader as LogReader
from copycat.raft._storage import MemoryLog as MemoryLog
from copycat.raft._storage import bootstrap_entries as bootstrap_entries
from copycat.raft._storage import limit_size as limit_size

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "MESSAGE_CLASSES",
    "NONE",
    "AppendEntries",
    "AppendEntriesResponse",
    "ConfChange",
    "ConfChangeSingle",
    "ConfChangeTransition",
    "ConfChangeType",
    "ConfState",
    "DeliberateBugs",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "LogReader",
    "MemoryLog",
    "Message",
    "MessageType",
    "ProgressState",
    "ProgressStatus",
    "Propose",
    "RaftConfig",
    "RandomSource",
    "RawNode",
    "ReadIndex",
    "ReadIndexResponse",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "Snapshot",
    "SnapshotMetadata",
    "SoftState",
    "SplitMix64",
    "Status",
    "TimeoutNow",
    "TransferLeader",
    "add_learner",
    "add_voter",
    "bootstrap_entries",
    "entry_size",
    "limit_size",
    "remove_node",
]
