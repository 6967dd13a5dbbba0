"""Deliberate bugs, for proving that the simulator's safety checks can fail.

Each switch breaks one rule of the raft paper. Nothing but tests and the simulator's
`--bug` flag may turn one on; the default instance has every switch off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliberateBugs:
    """Switches that each break one rule of raft, for tests of the checkers."""

    double_vote: bool = False
    """A node grants its vote to any candidate in a term, even after voting (§5.2)."""

    commit_previous_term: bool = False
    """The leader commits entries of earlier terms by counting replicas (§5.4.2)."""

    unconfirmed_reads: bool = False
    """The leader answers ReadIndex at once, without confirming with a quorum that it
    is still the leader (thesis §6.4)."""

    stale_lease_reads: bool = False
    """A LEASE_BASED leader answers every read at once from its commit index, trusting
    check-quorum as its lease (issue 15): cut off from the others, it goes on answering
    for up to an election timeout after they may have elected a new leader and
    committed more (thesis §6.4.1)."""

    vote_before_persist: bool = False
    """The host sends vote responses before persisting the vote (§5.2, Figure 2).
    The core cannot do this by itself; the simulator's host loop honours it."""

    ack_before_persist: bool = False
    """The host sends every message before persisting the ready, followers'
    acknowledgements of entries included (a leader may only count entries a follower
    has stored, §5.3). The core cannot do this by itself; the simulator's host loop
    honours it."""

    early_send_lone_leader: bool = False
    """`Ready.send_before_persist` is granted even when the commit index the ready's
    messages carry counts the leader's own unpersisted entries (a leader that alone is
    a quorum commits them at once): a learner may apply an entry that a crash before
    the leader's write then loses (§5.3, thesis §10.2.1)."""


NO_BUGS: Final = DeliberateBugs()
