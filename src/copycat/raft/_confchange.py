"""Membership change arithmetic (thesis chapter 4): compute the configuration and the
progress map that result from applying a `ConfChange`, or refuse the change with a
`ConfChangeError` saying which safety rule it breaks.

Rules enforced:
1. A simple change (outside a joint configuration) alters at most one voter.
2. A joint configuration is entered only from a non-joint one, and left only from one.
3. No node is a voter and a learner at once; a voter demoted inside a joint
   configuration stays a voter of the outgoing half until the joint config is left.
4. The incoming configuration never has zero voters.
Nothing here mutates its inputs: callers install the result whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from copycat.errors import ConfChangeError
from copycat.raft._messages import ConfChange, ConfChangeSingle, ConfChangeType
from copycat.raft._progress import Progress

if TYPE_CHECKING:
    from copycat.raft._tracker import TrackerConfig

ProgressFactory = Callable[[int, bool], Progress]
"""Makes a fresh `Progress` from (next index, is_learner)."""


class Changer:
    """Applies changes to a copy of a configuration and progress map."""

    __slots__ = ("_config", "_last_index", "_new_progress", "_progress")

    def __init__(
        self,
        config: TrackerConfig,
        progress: dict[int, Progress],
        last_index: int,
        new_progress: ProgressFactory,
    ) -> None:
        self._config = config
        self._progress = progress
        self._last_index = last_index
        self._new_progress = new_progress

    def apply(self, cc: ConfChange) -> tuple[TrackerConfig, dict[int, Progress]]:
        """The configuration after `cc`, chosen the way its transition asks."""
        if cc.leaves_joint():
            return self.leave_joint()
        if cc.uses_joint():
            return self.enter_joint(cc.auto_leave(), cc.changes)
        return self.simple(cc.changes)

    def enter_joint(
        self, auto_leave: bool, changes: tuple[ConfChangeSingle, ...]
    ) -> tuple[TrackerConfig, dict[int, Progress]]:
        config, progress = self._copy()
        if config.is_joint():
            raise ConfChangeError("already in a joint configuration; leave it first")
        if not config.voters:
            raise ConfChangeError("cannot enter a joint configuration from zero voters")
        config.voters_outgoing = set(config.voters)
        self._apply_all(config, progress, changes)
        config.auto_leave = auto_leave
        self._check(config, progress)
        return config, progress

    def leave_joint(self) -> tuple[TrackerConfig, dict[int, Progress]]:
        config, progress = self._copy()
        if not config.is_joint():
            raise ConfChangeError("not in a joint configuration; nothing to leave")
        for node_id in config.learners_next:
            progress[node_id] = self._copy_progress(progress[node_id], is_learner=True)
        config.learners |= config.learners_next
        config.learners_next = set()
        for node_id in config.voters_outgoing:
            if node_id not in config.voters and node_id not in config.learners:
                progress.pop(node_id, None)
        config.voters_outgoing = set()
        config.auto_leave = False
        self._check(config, progress)
        return config, progress

    def simple(
        self, changes: tuple[ConfChangeSingle, ...]
    ) -> tuple[TrackerConfig, dict[int, Progress]]:
        config, progress = self._copy()
        if config.is_joint():
            raise ConfChangeError("a simple change cannot be applied in a joint configuration")
        self._apply_all(config, progress, changes)
        if len(self._config.voters ^ config.voters) > 1:
            raise ConfChangeError(
                "more than one voter changed without entering a joint configuration"
            )
        self._check(config, progress)
        return config, progress

    # -- internals ----------------------------------------------------------------

    def _copy(self) -> tuple[TrackerConfig, dict[int, Progress]]:
        return self._config.copy(), dict(self._progress)

    def _apply_all(
        self,
        config: TrackerConfig,
        progress: dict[int, Progress],
        changes: tuple[ConfChangeSingle, ...],
    ) -> None:
        for change in changes:
            if change.node_id <= 0:
                raise ConfChangeError(
                    f"node id {change.node_id} is not a valid member id (ids are positive)"
                )
            if change.type == ConfChangeType.ADD_VOTER:
                self._make_voter(config, progress, change.node_id)
            elif change.type == ConfChangeType.ADD_LEARNER:
                self._make_learner(config, progress, change.node_id)
            else:
                self._remove(config, progress, change.node_id)
        if not config.voters:
            raise ConfChangeError("the change would leave the configuration with no voters")

    def _fresh(self, progress: dict[int, Progress], node_id: int, is_learner: bool) -> None:
        # A new member starts probing at the leader's last index: the first append
        # finds where its log matches.
        pr = self._new_progress(max(self._last_index, 1), is_learner)
        pr.recent_active = True
        progress[node_id] = pr

    def _make_voter(
        self, config: TrackerConfig, progress: dict[int, Progress], node_id: int
    ) -> None:
        if node_id not in progress:
            self._fresh(progress, node_id, False)
        elif progress[node_id].is_learner:
            progress[node_id] = self._copy_progress(progress[node_id], is_learner=False)
        config.learners.discard(node_id)
        config.learners_next.discard(node_id)
        config.voters.add(node_id)

    def _make_learner(
        self, config: TrackerConfig, progress: dict[int, Progress], node_id: int
    ) -> None:
        if node_id in config.learners:
            return
        if node_id not in progress:
            self._fresh(progress, node_id, True)
        config.voters.discard(node_id)
        config.learners.discard(node_id)
        config.learners_next.discard(node_id)
        if node_id in config.voters_outgoing:
            # Still a voter of the outgoing half: it becomes a learner on leaving.
            config.learners_next.add(node_id)
        else:
            progress[node_id] = self._copy_progress(progress[node_id], is_learner=True)
            config.learners.add(node_id)

    def _remove(self, config: TrackerConfig, progress: dict[int, Progress], node_id: int) -> None:
        config.voters.discard(node_id)
        config.learners.discard(node_id)
        config.learners_next.discard(node_id)
        if node_id not in config.voters_outgoing:
            progress.pop(node_id, None)

    def _copy_progress(self, pr: Progress, *, is_learner: bool) -> Progress:
        # Progress objects may be shared with the installed configuration; never mutate
        # them in place here.
        fresh = self._new_progress(pr.next, is_learner)
        fresh.match = pr.match
        fresh.state = pr.state
        fresh.probe_sent = pr.probe_sent
        fresh.pending_snapshot = pr.pending_snapshot
        fresh.recent_active = pr.recent_active
        return fresh

    @staticmethod
    def _check(config: TrackerConfig, progress: dict[int, Progress]) -> None:
        members = config.voters | config.voters_outgoing | config.learners | config.learners_next
        missing = members - progress.keys()
        if missing:
            raise ConfChangeError(f"members without progress: {sorted(missing)}")
        both = config.learners & (config.voters | config.voters_outgoing)
        if both:
            raise ConfChangeError(f"nodes {sorted(both)} would be voter and learner at once")
        if not config.learners_next <= config.voters_outgoing:
            raise ConfChangeError("learners_next must be outgoing voters")
        if config.learners_next & config.voters:
            raise ConfChangeError("a node cannot be an incoming voter and a learner-to-be")
        if not config.is_joint() and (config.learners_next or config.auto_leave):
            raise ConfChangeError("learners_next and auto_leave only exist in joint configs")
        for node_id in members:
            expected = node_id in config.learners
            if progress[node_id].is_learner != expected and node_id not in config.learners_next:
                raise ConfChangeError(f"progress of node {node_id} has the wrong learner flag")
