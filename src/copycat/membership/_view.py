# What the host reads from membership: members, views, replica locations, events, counters.
#
# What lives here: frozen, slotted value types only. They are built by `Membership` and
# handed out; nothing in them refers back to live state, so a `View` never changes under
# its reader.
#
# What must not: kinship types, asyncio, or behaviour beyond small pure helpers.
"""Public value types of `copycat.membership`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from copycat.membership._directory import Role


class MemberState(enum.Enum):
    """How this node sees a member. Views hold alive and suspect members only."""

    ALIVE = "alive"
    """Answering its probes."""
    SUSPECT = "suspect"
    """Missed its probes; declared failed unless it refutes in time. Still in the view:
    a node that is only slow keeps its replicas."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberInfo:
    """One run of a CopyCat node, as published in its metadata."""

    node_id: int
    transport_address: str
    """Its CopyCat transport address, "host:port"."""
    data_center: str
    rack: str
    state: MemberState
    epoch: int
    """Which run of the node this is (milliseconds of its clock at start); a restarted node
    comes back with a higher epoch."""
    gossip_address: str
    directory_version: int
    """The version of its directory it advertises (this node may hold an older one)."""
    name: str = ""
    """Its name for people (`Config.node_name`, else its transport address)."""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.transport_address)


@dataclass(frozen=True, slots=True, kw_only=True)
class View:
    """A consistent, immutable snapshot of the live members (alive and suspect), this node
    included, sorted by node id. Failed and departed members are not in it. `generation`
    rises with every change of membership seen by this node, so two views with the same
    generation from the same node are equal."""

    local_node_id: int
    generation: int
    members: tuple[MemberInfo, ...]

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[MemberInfo]:
        return iter(self.members)

    def __contains__(self, node_id: object) -> bool:
        return any(m.node_id == node_id for m in self.members)

    def member(self, node_id: int) -> MemberInfo | None:
        """The member with `node_id`, or None when it is not live in this view."""
        for m in self.members:
            if m.node_id == node_id:
                return m
        return None

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(m.node_id for m in self.members)

    def topology(self) -> Mapping[str, Mapping[str, tuple[int, ...]]]:
        """Node ids by data center, then rack (for placement), each sorted."""
        tree: dict[str, dict[str, list[int]]] = {}
        for m in self.members:
            tree.setdefault(m.data_center, {}).setdefault(m.rack, []).append(m.node_id)
        return MappingProxyType(
            {
                dc: MappingProxyType({rack: tuple(ids) for rack, ids in sorted(racks.items())})
                for dc, racks in sorted(tree.items())
            }
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Replica:
    """One replica of a data structure, on a live node."""

    node_id: int
    group_id: int
    replica_id: int
    role: Role


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberJoined:
    """A node joined (or a new run of a restarted node did)."""

    member: MemberInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberSuspect:
    """A node missed its probes; it stays in the view until it fails."""

    member: MemberInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberRecovered:
    """A suspect node refuted the suspicion."""

    member: MemberInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberFailed:
    """A node was declared dead; it and its directory entries left the view."""

    member: MemberInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberLeft:
    """A node left on purpose (or its run ended in a restart); it and its directory entries
    left the view."""

    member: MemberInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberUpdated:
    """A node's published address, data center or rack changed."""

    member: MemberInfo
    previous: MemberInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryChanged:
    """This node's copy of `node_id`'s directory changed (or this node published)."""

    node_id: int
    version: int
    changes: int
    """How many entries changed."""
    full: bool
    """Whether the copy was replaced by a full snapshot."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsLost:
    """The subscriber fell behind and `count` events were dropped: read `view()` again."""

    count: int


MembershipEvent: TypeAlias = (
    MemberJoined
    | MemberSuspect
    | MemberRecovered
    | MemberFailed
    | MemberLeft
    | MemberUpdated
    | DirectoryChanged
    | EventsLost
)


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipCounters:
    """Counters of one node's membership since it started."""

    decrypt_failures: int
    """Gossip packets that failed to decrypt (wrong key, or not ours)."""
    decode_errors: int
    """Gossip packets that decrypted but did not decode."""
    replays_dropped: int
    """Gossip packets refused as replays."""
    deltas_applied: int
    """Directory deltas applied to a peer's copy."""
    full_syncs: int
    """Full directory snapshots applied to a peer's copy."""
    sync_requests_sent: int
    """Directory pull requests sent (first attempts and retries)."""
    sync_retries: int
    """Pull requests sent again after a timeout."""
    sync_failures: int
    """Pulls abandoned after their last retry (anti-entropy tries again)."""
    sync_bytes_sent: int
    """Bytes of directory messages this node sent (requests and responses)."""
    sync_bytes_received: int
    """Bytes of directory messages this node received (requests and responses)."""
    requests_served: int
    """Pull requests from peers this node answered."""
    requests_dropped: int
    """Pull requests dropped because `max_concurrent_syncs` were being served."""
    messages_refused: int
    """Directory messages refused as malformed, hostile, oversized or of another version."""
    stale_chunks: int
    """Response chunks for no pending request (late, duplicated, or forged)."""
    digest_mismatches: int
    """Deltas or snapshots whose digest did not match (followed by a full pull)."""
    anti_entropy_runs: int
    anti_entropy_repairs: int
    """Peer copies found stale or diverged by anti-entropy, and pulled again."""
    members_ignored: int
    """Gossip members without valid CopyCat metadata (another version, or not CopyCat)."""
    name_conflicts: int
    meta_updates: int
    """Metadata updates this node gossiped."""
    internal_errors: int
    """Gossip events this node failed to handle because of a bug (logged with a traceback)."""
