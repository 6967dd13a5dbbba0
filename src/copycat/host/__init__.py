"""The multi-raft host: every raft group of a node over one log store and one transport
endpoint (see `Host`)."""

from __future__ import annotations

from copycat.host._config import HostConfig as HostConfig
from copycat.host._control import Method as Method
from copycat.host._control import decode_flag as decode_flag
from copycat.host._control import encode_flag as encode_flag
from copycat.host._creation import Creation as Creation
from copycat.host._creation import CreationConfig as CreationConfig
from copycat.host._follow import FollowConfig as FollowConfig
from copycat.host._follow import LeaderFollower as LeaderFollower
from copycat.host._force import ForcedConf as ForcedConf
from copycat.host._force import RecoveryRecord as RecoveryRecord
from copycat.host._host import Feed as Feed
from copycat.host._host import GroupStatus as GroupStatus
from copycat.host._host import Host as Host
from copycat.host._host import MembershipProof as MembershipProof
from copycat.host._host import Session as Session
from copycat.host._host import decode_ints as decode_ints
from copycat.host._host import encode_ints as encode_ints
from copycat.host._leave import LEAVE_CONCURRENCY as LEAVE_CONCURRENCY
from copycat.host._leave import Leave as Leave
from copycat.host._leave import LeaveConfig as LeaveConfig
from copycat.host._recover import Recovery as Recovery
from copycat.host._recover import RecoveryReport as RecoveryReport
from copycat.host._repair import Repair as Repair
from copycat.host._repair import RepairConfig as RepairConfig
from copycat.host._rule import RULE_INTS as RULE_INTS
from copycat.host._rule import ReplicaRule as ReplicaRule
from copycat.host._rule import new_incarnation as new_incarnation
from copycat.host._sessions import SESSION_ID_BYTES as SESSION_ID_BYTES
from copycat.host._tombstones import KnownNodes as KnownNodes
from copycat.host._tombstones import Retired as Retired
from copycat.host._tombstones import Tombstones as Tombstones

__all__ = [
    "RULE_INTS",
    "SESSION_ID_BYTES",
    "Creation",
    "CreationConfig",
    "Feed",
    "FollowConfig",
    "ForcedConf",
    "GroupStatus",
    "Host",
    "HostConfig",
    "KnownNodes",
    "LeaderFollower",
    "MembershipProof",
    "Method",
    "Recovery",
    "RecoveryRecord",
    "RecoveryReport",
    "Repair",
    "RepairConfig",
    "ReplicaRule",
    "Retired",
    "Session",
    "Tombstones",
    "decode_flag",
    "decode_ints",
    "encode_flag",
    "encode_ints",
    "new_incarnation",
]
