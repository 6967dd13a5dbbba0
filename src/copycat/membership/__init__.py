# Membership: who is alive, and who hosts which raft group.
#
# What lives here: re-exports only. `Membership` (start/stop, publish, lookups, events),
# `MembershipConfig`, the directory entry types, and the value types the host reads
# (`View`, `MemberInfo`, `Replica`, events, counters).
#
# What must not: kinship types (they stay inside `_gossip.py`), or imports from layers
# above (placement, host). This layer may import `copycat.errors` and lower layers only.
"""Cluster membership on SWIM gossip (kinship, behind our own `Gossip` interface) and the
cluster directory: each node's versioned set of the replicas it hosts, pulled as deltas
by the other nodes. See docs/membership.md.
"""

from __future__ import annotations

from copycat.membership._config import MembershipConfig as MembershipConfig
from copycat.membership._config import Preset as Preset
from copycat.membership._directory import DirectoryEntry as DirectoryEntry
from copycat.membership._directory import EntryKey as EntryKey
from copycat.membership._directory import Role as Role
from copycat.membership._membership import Membership as Membership
from copycat.membership._membership import MembershipEvents as MembershipEvents
from copycat.membership._meta import PROTOCOL_VERSION as PROTOCOL_VERSION
from copycat.membership._view import DirectoryChanged as DirectoryChanged
from copycat.membership._view import EventsLost as EventsLost
from copycat.membership._view import MemberFailed as MemberFailed
from copycat.membership._view import MemberInfo as MemberInfo
from copycat.membership._view import MemberJoined as MemberJoined
from copycat.membership._view import MemberLeft as MemberLeft
from copycat.membership._view import MemberRecovered as MemberRecovered
from copycat.membership._view import MembershipCounters as MembershipCounters
from copycat.membership._view import MembershipEvent as MembershipEvent
from copycat.membership._view import MemberState as MemberState
from copycat.membership._view import MemberSuspect as MemberSuspect
from copycat.membership._view import MemberUpdated as MemberUpdated
from copycat.membership._view import Replica as Replica
from copycat.membership._view import View as View

__all__ = [
    "PROTOCOL_VERSION",
    "DirectoryChanged",
    "DirectoryEntry",
    "EntryKey",
    "EventsLost",
    "MemberFailed",
    "MemberInfo",
    "MemberJoined",
    "MemberLeft",
    "MemberRecovered",
    "MemberState",
    "MemberSuspect",
    "MemberUpdated",
    "Membership",
    "MembershipConfig",
    "MembershipCounters",
    "MembershipEvent",
    "MembershipEvents",
    "Preset",
    "Replica",
    "Role",
    "View",
]
