"""Settings of the multi-raft host. Every knob says its unit, default and trade-off;
`validate()` runs at construction and raises `ConfigError` naming the field."""

from __future__ import annotations

from dataclasses import dataclass

from copycat.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    """How one node drives all of its raft groups."""

    node_id: int
    """This node's id in every group it hosts: positive, below 2**64, never reused."""

    tick_interval_s: float = 0.1
    """Seconds per raft tick. With `election_ticks` = 10 a dead leader is replaced after
    1 to 2 s. Shorter ticks fail over faster at the cost of CPU per group."""

    election_ticks: int = 10
    """Ticks without a leader before a member campaigns (randomized up to twice this)."""

    heartbeat_ticks: int = 1
    """Ticks between a leader's heartbeats."""

    quiesce_after_ticks: int = 5
    """Ticks without new entries, commits or term after which a group stops ticking
    (no heartbeats, no election timer) until a message, a proposal or a member failure
    wakes it: what lets a node host thousands of idle groups. Must stay below
    `election_ticks` so that followers settle before they would time out."""

    snapshot_every_entries: int = 10_000
    """A subscriber's member takes a snapshot (asking the provider) after consuming this
    many entries since the last one, then compacts the log. Smaller bounds log size and
    catch-up time at the cost of more snapshot work."""

    snapshot_keep_entries: int = 1_000
    """Entries kept below a snapshot when compacting, so that a slightly lagging member
    catches up from the log instead of a whole snapshot."""

    session_ttl_entries: int = 1_000_000
    """A proposer session unseen for this many applied entries of its group expires from
    the deduplication table. Retries after that may apply twice: keep it far above the
    number of entries a group commits during any proposer's retry window."""

    max_sessions: int = 10_000
    """Sessions a group's deduplication table holds; the least recently seen is evicted
    beyond it (same caveat as `session_ttl_entries`)."""

    proposal_retry_s: float = 1.0
    """A proposal not seen committed within this many seconds is proposed again with the
    same (session, sequence): duplicates are filtered at apply time."""

    proposal_timeout_s: float = 30.0
    """`propose` gives up after this many seconds with `ProposalTimeoutError` (outcome
    unknown: it may still commit, once)."""

    max_in_flight_proposals: int = 16_384
    """Proposals one session may have uncommitted at once; `propose` waits beyond it.
    A session's throughput is at most this many per commit latency, and a proposal from a
    follower's node takes 2 round trips: 16,384 keeps about 27,000 proposals/s flowing
    at 150 ms RTT (the bandwidth-delay product of one group), at a few hundred bytes of
    memory each."""

    max_proposal_bytes: int = (16 << 20) - (64 << 10)
    """Largest proposal `propose` takes, in bytes: it raises `MessageTooLargeError`
    naming this limit beyond it, whether the leader is on this node or not. Default
    16 MiB less 64 KiB: one entry must fit the transport's frame (16 MiB by default)
    with its headers, since an entry travels whole to every member."""

    max_msg_bytes: int = 1 << 20
    """Entries per append message, in bytes (raft `max_msg_bytes`)."""

    feed_batch_bytes: int = 4 << 20
    """Bytes of entries a subscriber's stream reads from the log at a time; the stream's
    memory is bounded by this, whatever the subscriber's lag (the lag stays on disk)."""

    def validate(self) -> None:
        if not 0 < self.node_id < 1 << 64:
            raise ConfigError("node_id", f"must be in 1..2**64-1, got {self.node_id}")
        if self.tick_interval_s <= 0:
            raise ConfigError("tick_interval_s", "must be positive")
        if self.election_ticks <= self.heartbeat_ticks or self.heartbeat_ticks < 1:
            raise ConfigError("election_ticks", "must exceed heartbeat_ticks (>= 1)")
        for name in (
            "snapshot_every_entries",
            "session_ttl_entries",
            "max_sessions",
            "max_in_flight_proposals",
            "max_proposal_bytes",
            "max_msg_bytes",
            "feed_batch_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be at least 1")
        if not 0 < self.quiesce_after_ticks < self.election_ticks:
            raise ConfigError("quiesce_after_ticks", "must be in 1..election_ticks-1")
        if self.snapshot_keep_entries < 0:
            raise ConfigError("snapshot_keep_entries", "must not be negative")
        if self.proposal_retry_s <= 0 or self.proposal_timeout_s < self.proposal_retry_s:
            raise ConfigError(
                "proposal_timeout_s", "must be at least proposal_retry_s, both positive"
            )

    def __post_init__(self) -> None:
        self.validate()
