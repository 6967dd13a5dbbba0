"""Configuration of one raft node (one member of one group), and the random source.

Every knob documents its unit, default and trade-off. `validate()` runs at
construction and raises `ConfigError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from copycat.errors import ConfigError


class RandomSource(Protocol):
    """The only randomness the core uses: `random.Random` satisfies it."""

    def randrange(self, start: int, stop: int, /) -> int: ...


class SplitMix64:
    """A tiny deterministic generator, the default `RandomSource` when none is given.

    Written here rather than taking `random.Random` because the core must not import
    the `random` module (its global state is shared and unseeded); seeded per node id it
    keeps election timeouts of different nodes apart and runs identically every time.
    """

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed & 0xFFFFFFFFFFFFFFFF

    def _next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def randrange(self, start: int, stop: int, /) -> int:
        if stop <= start:
            raise ValueError("empty range")
        return start + self._next() % (stop - start)


class ReadOnlyOption(IntEnum):
    """SAFE: a ReadIndex round confirms leadership with a quorum of heartbeats
    (thesis §6.4).

    LEASE_BASED (thesis §6.4.1): the leader answers at once while it holds a lease,
    and takes the SAFE path otherwise. It holds one while a quorum of voters (both
    quorums of a joint configuration; the leader counts itself) acknowledged messages
    it sent less than `election_ticks - lease_drift_ticks` of its ticks ago: each such
    follower ignores other candidates for `election_ticks` of its own ticks after it
    received the message, so no other leader can exist meanwhile. Never while a
    leadership transfer is under way, nor for the rest of the term once `TimeoutNow`
    was sent (the transferee's election skips the followers' leases). Needs
    `check_quorum` (config validation refuses LEASE_BASED without it). Correct only
    while the members' tick rates differ by less than the drift margin: a clock that
    runs fast or stalls unnoticed can make it serve stale reads. A host that stops
    ticking a member (quiescence) must credit the ticks it missed
    (`RawNode.credit_quiet_ticks`) before it steps anything else into it."""

    SAFE = 0
    LEASE_BASED = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftConfig:
    """Settings of one raft node."""

    node_id: int
    """This node's id: non-zero, never reused for another node, never an address."""

    election_ticks: int = 10
    """Ticks a follower waits without hearing from a leader before it campaigns; the
    actual timeout is drawn from [election_ticks, 2 * election_ticks). Shorter means
    faster failover at the cost of spurious elections. Must exceed heartbeat_ticks."""

    heartbeat_ticks: int = 1
    """Ticks between a leader's heartbeats. Must be at least 1."""

    applied: int = 0
    """The last index the state machine applied before a restart; committed entries
    up to it are not handed out again. 0 means: everything after the snapshot."""

    max_msg_bytes: int = 1 << 20
    """Upper bound, in bytes, of the entries in one append message (one entry may
    exceed it alone). Smaller lowers latency of other traffic at the cost of
    throughput. Default 1 MiB."""

    max_inflight_msgs: int = 256
    """Append messages in flight to one follower before the leader waits for an
    acknowledgement. Must be at least 1."""

    max_inflight_bytes: int = 0
    """Bytes of entries in flight to one follower; 0 means no byte limit (only
    max_inflight_msgs)."""

    max_uncommitted_bytes: int = 64 << 20
    """Bytes of entries the leader accepts beyond its commit index before it refuses
    proposals with `ProposalDroppedError`; 0 means no limit. Default 64 MiB."""

    max_committed_bytes_per_ready: int = 64 << 20
    """Bytes of committed entries handed out in one `Ready`. Default 64 MiB."""

    check_quorum: bool = True
    """A leader that has not heard from a quorum for election_ticks steps down, and
    followers that hear from a leader ignore vote requests for that long (leases)."""

    pre_vote: bool = True
    """Run a pre-vote round before a real election (thesis §9.6), so a partitioned node
    that rejoins does not disrupt the group by raising the term."""

    read_only: ReadOnlyOption = ReadOnlyOption.SAFE
    """How ReadIndex requests are confirmed; see `ReadOnlyOption`."""

    lease_drift_ticks: int = 2
    """LEASE_BASED reads only: the safety margin, in ticks, taken off a leader's lease
    for the difference between its tick clock and its followers' (tick phase: up to
    one tick; rate: the drift over an election timeout). A lease lasts
    `election_ticks - lease_drift_ticks` of the leader's ticks from when it sent the
    message a quorum acknowledged. Larger is safer against clocks that drift apart, at
    the cost of more reads taking the ReadIndex round. Default 2 (20% of the default
    election timeout). Must be at least 1 and, with LEASE_BASED, below
    election_ticks."""

    forward_proposals: bool = True
    """Followers and learners forward proposals to the leader; when False they raise
    `NotLeaderError` with the leader's id as a hint."""

    max_pending_read_index: int = 4096
    """ReadIndex requests a new leader queues until it commits its first entry;
    more are refused."""

    def validate(self) -> None:
        if self.node_id <= 0:
            raise ConfigError("node_id", f"must be a positive integer, got {self.node_id}")
        if self.heartbeat_ticks < 1:
            raise ConfigError("heartbeat_ticks", "must be at least 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError(
                "election_ticks",
                f"must be greater than heartbeat_ticks ({self.heartbeat_ticks}), "
                f"got {self.election_ticks}",
            )
        if self.max_inflight_msgs < 1:
            raise ConfigError("max_inflight_msgs", "must be at least 1")
        for name in (
            "applied",
            "max_msg_bytes",
            "max_inflight_bytes",
            "max_uncommitted_bytes",
            "max_committed_bytes_per_ready",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(name, "must not be negative")
        if self.lease_drift_ticks < 1:
            raise ConfigError(
                "lease_drift_ticks", f"must be at least 1, got {self.lease_drift_ticks}"
            )
        if self.read_only == ReadOnlyOption.LEASE_BASED:
            if not self.check_quorum:
                # Followers ignore other candidates during a lease only with
                # check_quorum: without it no lease exists to trust.
                raise ConfigError("read_only", "LEASE_BASED reads need check_quorum=True")
            if self.lease_drift_ticks >= self.election_ticks:
                raise ConfigError(
                    "lease_drift_ticks",
                    f"must be below election_ticks ({self.election_ticks}) with "
                    f"LEASE_BASED reads, got {self.lease_drift_ticks}",
                )
