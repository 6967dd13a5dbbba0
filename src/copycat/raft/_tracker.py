"""The leader's (and candidate's) bookkeeping of a group's members: the active
configuration, each member's `Progress`, and the votes of the current election.

Membership changes are computed in `_confchange.py` and installed here whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from copycat.raft._messages import ConfState
from copycat.raft._progress import Inflights, Progress
from copycat.raft._quorum import VoteResult, joint_committed, joint_vote


@dataclass(slots=True, kw_only=True)
class TrackerConfig:
    """A membership configuration, mutable while a change is being computed."""

    voters: set[int] = field(default_factory=set)
    voters_outgoing: set[int] = field(default_factory=set)
    learners: set[int] = field(default_factory=set)
    learners_next: set[int] = field(default_factory=set)
    auto_leave: bool = False

    def copy(self) -> TrackerConfig:
        return TrackerConfig(
            voters=set(self.voters),
            voters_outgoing=set(self.voters_outgoing),
            learners=set(self.learners),
            learners_next=set(self.learners_next),
            auto_leave=self.auto_leave,
        )

    def is_joint(self) -> bool:
        return bool(self.voters_outgoing)

    def all_voters(self) -> set[int]:
        return self.voters | self.voters_outgoing

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=frozenset(self.voters),
            voters_outgoing=frozenset(self.voters_outgoing),
            learners=frozenset(self.learners),
            learners_next=frozenset(self.learners_next),
            auto_leave=self.auto_leave,
        )

    @classmethod
    def from_conf_state(cls, cs: ConfState) -> TrackerConfig:
        return cls(
            voters=set(cs.voters),
            voters_outgoing=set(cs.voters_outgoing),
            learners=set(cs.learners),
            learners_next=set(cs.learners_next),
            auto_leave=cs.auto_leave,
        )


class ProgressTracker:
    """Configuration, progress and votes for one raft group."""

    __slots__ = ("config", "max_inflight_bytes", "max_inflight_msgs", "progress", "votes")

    def __init__(self, max_inflight_msgs: int, max_inflight_bytes: int) -> None:
        self.config = TrackerConfig()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.max_inflight_msgs = max_inflight_msgs
        self.max_inflight_bytes = max_inflight_bytes

    def new_progress(self, next_index: int, is_learner: bool) -> Progress:
        return Progress(
            next_index=next_index,
            inflights=Inflights(self.max_inflight_msgs, self.max_inflight_bytes),
            is_learner=is_learner,
        )

    def committed(self) -> int:
        """The highest index acknowledged by a quorum of the configuration."""
        progress = self.progress
        return joint_committed(
            self.config.voters, self.config.voters_outgoing, lambda v: progress[v].match
        )

    def is_singleton(self) -> bool:
        return len(self.config.voters) == 1 and not self.config.voters_outgoing

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        self.votes.setdefault(node_id, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        """(granted, rejected, result) of the current election."""
        granted = rejected = 0
        for node_id in self.progress:
            vote = self.votes.get(node_id)
            if vote is True:
                granted += 1
            elif vote is False:
                rejected += 1
        result = joint_vote(self.config.voters, self.config.voters_outgoing, self.votes)
        return granted, rejected, result

    def quorum_active(self) -> bool:
        """Whether a quorum has been heard from since the last check."""
        active = {
            node_id: True
            for node_id, pr in self.progress.items()
            if pr.recent_active and not pr.is_learner
        }
        return joint_vote(self.config.voters, self.config.voters_outgoing, active) == (
            VoteResult.WON
        )

    def quorum_acked_since(self, leader_id: int, tick: int) -> bool:
        """Whether a quorum of voters (both quorums of a joint configuration) is known
        to have received messages the leader sent at `tick` or later (`lease_tick`);
        the leader, `leader_id`, counts for itself. Learners never count."""
        acked = {
            node_id: True
            for node_id, pr in self.progress.items()
            if not pr.is_learner and (node_id == leader_id or pr.lease_tick >= max(tick, 0))
        }
        return joint_vote(self.config.voters, self.config.voters_outgoing, acked) == (
            VoteResult.WON
        )

    def voter_ids(self) -> set[int]:
        return self.config.all_voters()

    def conf_state(self) -> ConfState:
        return self.config.conf_state()
