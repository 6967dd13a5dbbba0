"""The leader's view of each follower: `Progress` (match/next index, the PROBE /
REPLICATE / SNAPSHOT state machine of etcd's raft design) and `Inflights`, the bounded
window of append messages sent but not yet acknowledged (flow control).

Pure data and arithmetic; no messages are built here.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    """PROBE: one append at a time until the follower's match index is found.
    REPLICATE: appends are pipelined, bounded by `Inflights`.
    SNAPSHOT: a snapshot is on its way; appends wait for its outcome."""

    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """A FIFO of (last index, bytes) of the appends in flight to one follower.

    Full when either `max_msgs` messages or (if non-zero) `max_bytes` bytes are in
    flight; the leader stops sending until acknowledgements free room.
    """

    __slots__ = ("_bytes", "_queue", "max_bytes", "max_msgs")

    def __init__(self, max_msgs: int, max_bytes: int = 0) -> None:
        self.max_msgs = max_msgs
        self.max_bytes = max_bytes
        self._queue: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def add(self, index: int, size: int) -> None:
        self._queue.append((index, size))
        self._bytes += size

    def free_le(self, index: int) -> None:
        """Forget every message whose last index is at most `index`."""
        queue = self._queue
        while queue and queue[0][0] <= index:
            self._bytes -= queue.popleft()[1]

    def free_first(self) -> None:
        """Forget the oldest message (its acknowledgement is presumed lost)."""
        if self._queue:
            self._bytes -= self._queue.popleft()[1]

    def full(self) -> bool:
        return len(self._queue) >= self.max_msgs or (
            self.max_bytes > 0 and self._bytes >= self.max_bytes
        )

    def count(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()
        self._bytes = 0


class Progress:
    """What the leader knows of one member's log."""

    __slots__ = (
        "inflights",
        "is_learner",
        "lease_tick",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, *, next_index: int, inflights: Inflights, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = False
        self.is_learner = is_learner
        self.inflights = inflights
        self.lease_tick = -1
        """LEASE_BASED reads: the leader's tick (its lease clock) when it sent the
        latest message this member is known to have acknowledged; -1 for none."""

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, last_index: int, count: int, size: int) -> None:
        """Record an append carrying `count` entries up to `last_index`."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index, size)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged `index`; returns whether `match` moved."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at `rejected`; back off `next`. Returns
        False when the rejection is stale (it says nothing new)."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"learner={self.is_learner}, paused={self.is_paused()})"
        )
