"""Every exception CopyCat raises, in one tree.

    CopyCatError
    ├── ConfigError (also ValueError)          invalid configuration; names the field
    ├── InvalidIdError (also ValueError)       text that is not a data structure id
    ├── ArgumentError (also TypeError)         a call was given an argument it cannot take
    ├── AddressInUseError (also OSError)       the address to listen on is taken; names it
    ├── ProposalError                          a proposal was not accepted
    │   ├── NotLeaderError(leader_hint)        this member cannot take it; try the hint
    │   ├── ProposalDroppedError               refused (flow control, pending change); retry later
    │   └── MayHaveCommittedError              outcome unknown: delivered at most once
    │       └── ProposalTimeoutError           not seen committed in time; retried until then
    ├── ConfChangeError (also ValueError)      a membership change that would be unsafe
    ├── GroupNotFoundError(group)
    ├── StorageError                           durable state cannot be read or written
    │   ├── CorruptLogError(group, index)      a checksum failed: refused, never served
    │   ├── CompactedError(index)              the entry was compacted into a snapshot
    │   ├── UnavailableError(index)            the entry is not (yet) in the log
    │   ├── SnapshotTemporarilyUnavailableError
    │   └── FormatVersionError(found, expected)
    ├── TransportError
    │   ├── PeerUnreachableError(peer)
    │   ├── HandshakeError(peer)
    │   ├── ProtocolError(reason)              malformed or hostile bytes from a peer; refused
    │   ├── MessageTooLargeError(size, limit)  a message that no frame may carry
    │   ├── RequestTimeoutError(peer)          (also TimeoutError) no response in time
    │   ├── RemoteError(peer, code)            the peer's handler failed with an unknown error
    │   └── SnapshotStreamError(peer)          a snapshot stream failed; report it to raft
    ├── ClusterUnreachableError                told to join a cluster that nobody answers for
    ├── SplitGroupError(group)                 two raft groups were seen under one id
    ├── ReadTimeoutError(group, index)        (also TimeoutError) a read barrier or delivery wait ran out
    ├── RecoveryRefusedError(group)            `recover` refused: voters reachable, or a leader
    ├── ClosedError                            you closed it
    ├── BrokenError                            an external failure closed it (see __cause__)
    ├── NotEnoughNodesError(asked, available)
    └── InternalError                          a bug: the group is stopped, please file a report

Rule: this module imports nothing from CopyCat; every other module may import it.
"""

from __future__ import annotations

from typing import Final

__all__: Final = [
    "AddressInUseError",
    "ArgumentError",
    "BrokenError",
    "ClosedError",
    "ClusterUnreachableError",
    "CompactedError",
    "ConfChangeError",
    "ConfigError",
    "CopyCatError",
    "CorruptLogError",
    "FormatVersionError",
    "GroupNotFoundError",
    "HandshakeError",
    "InternalError",
    "InvalidIdError",
    "MayHaveCommittedError",
    "MessageTooLargeError",
    "NotEnoughNodesError",
    "NotLeaderError",
    "PeerUnreachableError",
    "ProposalDroppedError",
    "ProposalError",
    "ProposalTimeoutError",
    "ProtocolError",
    "ReadTimeoutError",
    "RecoveryRefusedError",
    "RemoteError",
    "RequestTimeoutError",
    "SnapshotStreamError",
    "SnapshotTemporarilyUnavailableError",
    "SplitGroupError",
    "StorageError",
    "TransportError",
    "UnavailableError",
]


class CopyCatError(Exception):
    """Base of every exception CopyCat raises on purpose."""


class ConfigError(CopyCatError, ValueError):
    """A configuration value breaks a rule; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidIdError(CopyCatError, ValueError):
    """Text (or a number) that is not a data structure id: a ULID is 26 characters of
    Crockford base32 (0-9 and A-Z without I, L, O, U; either case) whose first character
    is 0 to 7. `text` holds what was given. Check where the id came from: ids are made by
    `new_data_structure_id()` and travel only in their string form."""

    def __init__(self, text: object, reason: str) -> None:
        super().__init__(f"{text!r} is not a data structure id: {reason}")
        self.text = text


class ArgumentError(CopyCatError, TypeError):
    """A call was given an argument of a type (or shape) it cannot take: a proposal that
    is not bytes, a snapshot provider that is not callable. The message names the
    argument and what it must be."""


class AddressInUseError(CopyCatError, OSError):
    """The node cannot listen on an address because another socket holds it; `address`
    ("host:port") and `what` (the transport or gossip) name it. Stop the other process,
    or give this node another port."""

    def __init__(self, what: str, address: str, detail: str = "") -> None:
        message = f"the {what} cannot listen on {address}: the address is in use"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.what = what
        self.address = address


class ProposalError(CopyCatError):
    """A proposal was not accepted by the raft group."""


class NotLeaderError(ProposalError):
    """This member is not the leader and cannot forward the proposal.

    `leader_hint` is the id of the leader this member knows of, or None when it
    knows of none (an election is under way): retry after a short wait.
    """

    def __init__(self, leader_hint: int | None, message: str | None = None) -> None:
        if message is None:
            if leader_hint is None:
                message = "no leader is known (an election is under way); retry shortly"
            else:
                message = f"not the leader; the leader is node {leader_hint}"
        super().__init__(message)
        self.leader_hint = leader_hint


class ProposalDroppedError(ProposalError):
    """The leader refused the proposal (flow control, a pending membership change, a
    leadership transfer). Nothing was appended; retrying later is safe."""


class MayHaveCommittedError(ProposalError):
    """The proposal's outcome is unknown: it may have committed (it is then delivered
    once, like any other) or not (it never will be). Never delivered twice. Raised when
    the member under a proposal went away (removed, rebuilt, shut down) before the
    proposal was seen committed."""


class ProposalTimeoutError(MayHaveCommittedError):
    """The proposal was not seen committed within `proposal_timeout_s`; until then the
    session retried it and deduplicates, so it is applied at most once."""


class ClusterUnreachableError(CopyCatError):
    """This node was told to join a cluster (`peers_to_contact`) and has reached nobody
    in it, or not enough of it to know what the cluster holds: it creates nothing
    rather than start a second group for an id. Check the peers' addresses, the cluster
    name and the gossip keys, then retry."""


class ReadTimeoutError(CopyCatError, TimeoutError):
    """A read barrier (`Subscription.read_barrier`) or a wait for delivery
    (`Subscription.wait_delivered`) did not finish in time. `index` is the position it
    waited for (None: no leader confirmed a read index in time); `delivered` is the
    position the subscriber's `commits()` had delivered. Nothing changed in the group:
    retry once it has a leader, or read on from the subscriber's state if staleness is
    acceptable."""

    def __init__(
        self, group: object, index: int | None, delivered: int, timeout_s: float, message: str
    ) -> None:
        super().__init__(f"{message} within {timeout_s} s (delivered through {delivered})")
        self.group = group
        self.index = index
        self.delivered = delivered


class SplitGroupError(CopyCatError):
    """Two raft groups were seen under one data structure id (`group`): the younger one
    refuses new writes. Keep the older one's data; a bug or a misconfigured cluster
    (two clusters merged) caused it. Please file a report."""

    def __init__(self, group: object, message: str) -> None:
        super().__init__(message)
        self.group = group


class RecoveryRefusedError(CopyCatError):
    """`CopyCat.recover` (`copycat recover`) refused to rebuild group `group` from this
    node's member: a majority of its voters is still reachable (`reachable_voters`, each
    with the evidence, from gossip or raft), or it has a leader (`leader_id`, 0: none), or
    this node is no member of it. Nothing was changed. A group whose majority is
    reachable recovers by itself: find out why it does not before forcing anything."""

    def __init__(
        self,
        group: object,
        message: str,
        *,
        reachable_voters: dict[int, str] | None = None,
        leader_id: int = 0,
    ) -> None:
        super().__init__(message)
        self.group = group
        self.reachable_voters: dict[int, str] = dict(reachable_voters or {})
        """Voters (other than this node) counted reachable, with the evidence."""
        self.leader_id = leader_id


class ConfChangeError(CopyCatError, ValueError):
    """A membership change was refused because applying it would be unsafe."""


class GroupNotFoundError(CopyCatError):
    """No raft group with this id is known."""

    def __init__(self, group: object) -> None:
        super().__init__(f"group {group} is not known on this node")
        self.group = group


class StorageError(CopyCatError):
    """Durable state cannot be read or written."""


class CorruptLogError(StorageError):
    """A stored record or snapshot failed its checksum. The data is refused, never
    served. When the group has other replicas, stop this node, move its data directory
    aside (keep it for a report) and start the node on an empty one: it joins as a new
    node and repair places replicas on it again from the others. Never copy another
    node's data directory in: it holds that node's id. With no other replica left, see
    `copycat recover` on the replica that survives."""

    def __init__(self, group: object, index: int | None, detail: str) -> None:
        where = f"group {group}" if index is None else f"group {group} index {index}"
        super().__init__(f"corrupt record in {where}: {detail}")
        self.group = group
        self.index = index


class CompactedError(StorageError):
    """The requested index was compacted into a snapshot; read the snapshot instead."""

    def __init__(self, index: int, first_index: int) -> None:
        super().__init__(f"index {index} is compacted; the log starts at {first_index}")
        self.index = index
        self.first_index = first_index


class UnavailableError(StorageError):
    """The requested index is past the end of the log."""

    def __init__(self, index: int, last_index: int) -> None:
        super().__init__(f"index {index} is not in the log; the last index is {last_index}")
        self.index = index
        self.last_index = last_index


class SnapshotTemporarilyUnavailableError(StorageError):
    """The snapshot is being produced; the caller should try again later."""


class FormatVersionError(StorageError):
    """Stored data was written by an incompatible format version."""

    def __init__(self, what: str, found: int, expected: int) -> None:
        super().__init__(
            f"{what} has format version {found}, this CopyCat reads version {expected}; "
            "use a matching CopyCat release or migrate the data"
        )
        self.found = found
        self.expected = expected


class TransportError(CopyCatError):
    """A node-to-node link failed."""


class PeerUnreachableError(TransportError):
    """The peer cannot be reached now."""

    def __init__(self, peer: int, message: str | None = None) -> None:
        super().__init__(message or f"node {peer} is unreachable")
        self.peer = peer


class HandshakeError(TransportError):
    """The peer's handshake was refused (version, cluster name, identity)."""

    def __init__(self, peer: object, message: str) -> None:
        super().__init__(message)
        self.peer = peer


class ProtocolError(TransportError):
    """Bytes from a peer broke the wire format (see docs/wire.md). The frame or
    connection is refused and counted under `reason`; the endpoint keeps serving."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class MessageTooLargeError(TransportError):
    """A message is larger than the transport's maximum frame size. Lower the raft
    layer's `max_msg_bytes` or raise the transport's `max_frame_bytes` on every node."""

    def __init__(self, size: int, limit: int, what: str = "a message") -> None:
        limit_of = "the frame limit" if what == "a message" else "the limit"
        super().__init__(f"{what} of {size:,} bytes exceeds {limit_of} of {limit:,} bytes")
        self.size = size
        self.limit = limit


class RequestTimeoutError(TransportError, TimeoutError):
    """A request got no response in time. The peer may still have acted on it: make
    control operations idempotent and retry."""

    def __init__(self, peer: int, method: str, timeout_s: float) -> None:
        super().__init__(f"request {method!r} to node {peer} got no response in {timeout_s} s")
        self.peer = peer
        self.method = method


class RemoteError(TransportError):
    """The peer's request handler failed with an error that has no local type;
    `code` names the remote error class (or `unknown_method`, `overloaded`)."""

    def __init__(self, peer: int, code: str, message: str) -> None:
        super().__init__(f"node {peer} answered {code}: {message}")
        self.peer = peer
        self.code = code


class SnapshotStreamError(TransportError):
    """A snapshot could not be streamed to, or installed by, the peer. Report it to
    the raft group (`report_snapshot(peer, success=False)`); raft retries later."""

    def __init__(self, peer: int, message: str) -> None:
        super().__init__(f"snapshot to node {peer} failed: {message}")
        self.peer = peer


class ClosedError(CopyCatError):
    """The object was closed by its owner; it cannot be used any more."""


class BrokenError(CopyCatError):
    """An external failure closed the object; `__cause__` holds the failure."""


class NotEnoughNodesError(CopyCatError):
    """The cluster cannot place the replicas asked for."""

    def __init__(self, asked: int, available: int, detail: str = "") -> None:
        msg = f"asked for {asked} replicas but only {available} nodes qualify"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.asked = asked
        self.available = available


class InternalError(CopyCatError):
    """A bug in CopyCat: an invariant broke. The affected group's member on this node is
    stopped (fail closed): its waiting proposals fail with this error, new ones are
    refused with it, its subscriber's stream ends and `errors()` reports it; the node
    and its other groups keep serving. A restart of the node opens the group again.
    Please file a report with the log (the line says "stopped by a bug")."""
