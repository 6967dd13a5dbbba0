"""Membership change arithmetic (`copycat.raft._confchange.Changer`): one table test per
refusal rule of the module docstring, and random change sequences checked against a
naive set model of etcd's confchange semantics (thesis chapter 4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copycat.errors import ConfChangeError
from copycat.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    add_learner,
    add_voter,
    remove_node,
)
from copycat.raft._confchange import Changer
from copycat.raft._progress import Inflights, Progress, ProgressState
from copycat.raft._tracker import TrackerConfig

if TYPE_CHECKING:
    from collections.abc import Set as AbstractSet

LAST_INDEX = 20
VOTER, LEARNER, REMOVE = (
    ConfChangeType.ADD_VOTER,
    ConfChangeType.ADD_LEARNER,
    ConfChangeType.REMOVE_NODE,
)


def new_progress(next_index: int, is_learner: bool) -> Progress:
    return Progress(next_index=next_index, inflights=Inflights(8), is_learner=is_learner)


def setup(
    voters: set[int],
    learners: AbstractSet[int] = frozenset(),
    *,
    outgoing: AbstractSet[int] = frozenset(),
    learners_next: AbstractSet[int] = frozenset(),
    auto_leave: bool = False,
) -> tuple[TrackerConfig, dict[int, Progress]]:
    config = TrackerConfig(
        voters=set(voters),
        voters_outgoing=set(outgoing),
        learners=set(learners),
        learners_next=set(learners_next),
        auto_leave=auto_leave,
    )
    progress = {}
    for node_id in voters | outgoing | learners | learners_next:
        pr = new_progress(node_id * 10 + 1, node_id in learners)
        pr.match = node_id * 10  # recognisable, to check that changes keep it
        progress[node_id] = pr
    return config, progress


def changer(config: TrackerConfig, progress: dict[int, Progress]) -> Changer:
    return Changer(config, progress, LAST_INDEX, new_progress)


def ch(kind: ConfChangeType, node_id: int) -> ConfChangeSingle:
    return ConfChangeSingle(type=kind, node_id=node_id)


def snapshot_of(config: TrackerConfig, progress: dict[int, Progress]) -> object:
    return (
        config.conf_state(),
        {n: (id(p), p.match, p.next, p.is_learner, p.state) for n, p in progress.items()},
    )


# -- refusals -----------------------------------------------------------------------------


def test_simple_change_refused_in_joint_config() -> None:
    config, progress = setup({1, 2, 3}, outgoing={1, 2})
    with pytest.raises(ConfChangeError, match="joint"):
        changer(config, progress).simple((ch(VOTER, 4),))


@pytest.mark.parametrize(
    "changes",
    [
        (ch(VOTER, 4), ch(VOTER, 5)),
        (ch(REMOVE, 1), ch(VOTER, 4)),  # a replacement is two voter changes
        (ch(REMOVE, 1), ch(REMOVE, 2)),
        (ch(LEARNER, 1), ch(VOTER, 4)),  # a demotion counts as a voter change
    ],
)
def test_simple_change_refused_when_more_than_one_voter_changes(
    changes: tuple[ConfChangeSingle, ...],
) -> None:
    config, progress = setup({1, 2, 3})
    with pytest.raises(ConfChangeError, match="more than one voter"):
        changer(config, progress).simple(changes)


def test_simple_change_may_touch_many_learners_and_one_voter() -> None:
    config, progress = setup({1, 2, 3}, {4})
    new, prs = changer(config, progress).simple(
        (ch(LEARNER, 5), ch(LEARNER, 6), ch(REMOVE, 4), ch(VOTER, 7))
    )
    assert new.voters == {1, 2, 3, 7}
    assert new.learners == {5, 6}
    assert set(prs) == {1, 2, 3, 5, 6, 7}


def test_adding_then_removing_the_same_voter_is_no_voter_change() -> None:
    config, progress = setup({1})
    new, prs = changer(config, progress).simple((ch(VOTER, 2), ch(REMOVE, 2)))
    assert new.voters == {1}
    assert set(prs) == {1}


@pytest.mark.parametrize(
    "changes",
    [(ch(REMOVE, 1),), (ch(LEARNER, 1),)],
)
def test_simple_change_refused_when_it_leaves_zero_voters(
    changes: tuple[ConfChangeSingle, ...],
) -> None:
    config, progress = setup({1}, {2})
    with pytest.raises(ConfChangeError, match="no voters"):
        changer(config, progress).simple(changes)


def test_enter_joint_refused_when_already_joint() -> None:
    config, progress = setup({1, 2, 4}, outgoing={1, 2, 3})
    with pytest.raises(ConfChangeError, match="already in a joint"):
        changer(config, progress).enter_joint(True, (ch(VOTER, 5),))


def test_enter_joint_refused_from_zero_voters() -> None:
    config, progress = setup(set(), {1})
    with pytest.raises(ConfChangeError, match="zero voters"):
        changer(config, progress).enter_joint(True, (ch(VOTER, 1),))


def test_enter_joint_refused_when_incoming_has_zero_voters() -> None:
    config, progress = setup({1, 2})
    with pytest.raises(ConfChangeError, match="no voters"):
        changer(config, progress).enter_joint(False, (ch(REMOVE, 1), ch(LEARNER, 2)))


def test_leave_joint_refused_when_not_joint() -> None:
    config, progress = setup({1, 2, 3})
    with pytest.raises(ConfChangeError, match="not in a joint"):
        changer(config, progress).leave_joint()


@pytest.mark.parametrize("kind", list(ConfChangeType))
def test_node_id_zero_is_refused(kind: ConfChangeType) -> None:
    config, progress = setup({1, 2, 3})
    with pytest.raises(ConfChangeError, match="node id 0"):
        changer(config, progress).simple((ch(kind, 0),))
    with pytest.raises(ConfChangeError, match="node id 0"):
        changer(config, progress).enter_joint(True, (ch(kind, 0),))


@pytest.mark.parametrize("node_id", [-1, -(2**63)])
def test_negative_node_id_is_refused(node_id: int) -> None:
    """No node can run with a non-positive id (`RaftConfig.validate`, `bootstrap_entries`
    refuse it), so adding one as a voter would make a quorum unreachable for good."""
    config, progress = setup({1})
    with pytest.raises(ConfChangeError):
        changer(config, progress).simple((ch(VOTER, node_id),))
    with pytest.raises(ConfChangeError):
        changer(config, progress).enter_joint(True, (ch(LEARNER, node_id),))


def test_refusals_leave_the_inputs_untouched() -> None:
    config, progress = setup({1, 2, 3}, {4})
    before = snapshot_of(config, progress)
    with pytest.raises(ConfChangeError):
        changer(config, progress).simple((ch(VOTER, 5), ch(VOTER, 6)))
    assert snapshot_of(config, progress) == before
    with pytest.raises(ConfChangeError):
        changer(config, progress).leave_joint()
    assert snapshot_of(config, progress) == before
    with pytest.raises(ConfChangeError):
        changer(config, progress).enter_joint(True, (ch(REMOVE, 1), ch(REMOVE, 2), ch(REMOVE, 3)))
    assert snapshot_of(config, progress) == before


# -- what successful changes produce ------------------------------------------------------


def test_successful_changes_leave_the_inputs_untouched() -> None:
    config, progress = setup({1, 2, 3}, {4})
    before = snapshot_of(config, progress)
    changer(config, progress).simple((ch(VOTER, 4),))
    changer(config, progress).simple((ch(LEARNER, 1),))
    changer(config, progress).enter_joint(True, (ch(LEARNER, 2), ch(VOTER, 4), ch(REMOVE, 3)))
    assert snapshot_of(config, progress) == before


def test_new_member_gets_fresh_progress_at_the_last_index() -> None:
    config, progress = setup({1})
    _, prs = changer(config, progress).simple((ch(VOTER, 2), ch(LEARNER, 3)))
    for node_id, is_learner in ((2, False), (3, True)):
        pr = prs[node_id]
        assert (pr.match, pr.next, pr.is_learner) == (0, LAST_INDEX, is_learner)
        assert pr.state == ProgressState.PROBE
        assert pr.recent_active  # not evicted by check-quorum before it is heard from
    _, prs = Changer(config, progress, 0, new_progress).simple((ch(VOTER, 2),))
    assert prs[2].next == 1  # never 0, even on an empty log


def test_promoting_a_learner_keeps_its_match_and_does_not_mutate_the_old_progress() -> None:
    config, progress = setup({1, 2}, {3})
    old = progress[3]
    new, prs = changer(config, progress).simple((ch(VOTER, 3),))
    assert new.voters == {1, 2, 3}
    assert not new.learners
    assert prs[3] is not old
    assert (prs[3].match, prs[3].next, prs[3].is_learner) == (30, 31, False)
    assert old.is_learner


def test_demoting_a_voter_outside_joint_makes_it_a_learner_at_once() -> None:
    config, progress = setup({1, 2, 3})
    new, prs = changer(config, progress).simple((ch(LEARNER, 3),))
    assert (new.voters, new.learners, new.learners_next) == ({1, 2}, {3}, set())
    assert prs[3].is_learner
    assert prs[3].match == 30


def test_demotion_inside_joint_waits_in_learners_next_until_leave() -> None:
    config, progress = setup({1, 2, 3})
    joint, prs = changer(config, progress).enter_joint(True, (ch(LEARNER, 3), ch(VOTER, 4)))
    assert joint.voters == {1, 2, 4}
    assert joint.voters_outgoing == {1, 2, 3}
    assert joint.learners_next == {3}
    assert not joint.learners
    assert joint.auto_leave
    # Still a voter of the outgoing half: its progress is a voter's.
    assert not prs[3].is_learner

    left, prs2 = changer(joint, prs).leave_joint()
    assert (left.voters, left.learners, left.voters_outgoing, left.learners_next) == (
        {1, 2, 4},
        {3},
        set(),
        set(),
    )
    assert not left.auto_leave
    assert prs2[3].is_learner
    assert prs2[3].match == 30
    assert not prs[3].is_learner  # the joint config's progress map is untouched


def test_removed_outgoing_voter_keeps_progress_until_leave() -> None:
    config, progress = setup({1, 2, 3})
    joint, prs = changer(config, progress).enter_joint(False, (ch(REMOVE, 3),))
    assert joint.voters == {1, 2}
    assert joint.voters_outgoing == {1, 2, 3}
    assert 3 in prs  # the outgoing majority still counts its acknowledgements
    assert not joint.auto_leave
    left, prs2 = changer(joint, prs).leave_joint()
    assert left.voters == {1, 2}
    assert set(prs2) == {1, 2}


def test_removed_learner_loses_progress_at_once_even_in_joint() -> None:
    config, progress = setup({1, 2}, {5})
    joint, prs = changer(config, progress).enter_joint(True, (ch(REMOVE, 5), ch(VOTER, 3)))
    assert 5 not in prs
    assert joint.learners == set()


def test_repromoting_a_node_demoted_in_the_same_joint_change() -> None:
    config, progress = setup({1, 2, 3})
    joint, prs = changer(config, progress).enter_joint(True, (ch(LEARNER, 3), ch(VOTER, 3)))
    assert joint.voters == {1, 2, 3}
    assert joint.learners_next == set()
    assert not prs[3].is_learner


@pytest.mark.parametrize(
    ("cc", "want_joint", "want_auto_leave"),
    [
        (add_voter(4), False, False),
        (remove_node(3), False, False),
        (add_learner(4), False, False),
        (ConfChange(changes=(ch(VOTER, 4), ch(VOTER, 5))), True, True),
        (
            ConfChange(changes=(ch(VOTER, 4),), transition=ConfChangeTransition.JOINT_IMPLICIT),
            True,
            True,
        ),
        (
            ConfChange(changes=(ch(VOTER, 4),), transition=ConfChangeTransition.JOINT_EXPLICIT),
            True,
            False,
        ),
    ],
)
def test_apply_routes_by_transition(
    cc: ConfChange, want_joint: bool, want_auto_leave: bool
) -> None:
    config, progress = setup({1, 2, 3})
    new, _ = changer(config, progress).apply(cc)
    assert new.is_joint() == want_joint
    assert new.auto_leave == want_auto_leave
    if want_joint:
        assert new.voters_outgoing == {1, 2, 3}


def test_apply_with_no_changes_leaves_the_joint_config() -> None:
    config, progress = setup({1, 2, 4}, outgoing={1, 2, 3}, auto_leave=True)
    new, prs = changer(config, progress).apply(ConfChange())
    assert not new.is_joint()
    assert new.voters == {1, 2, 4}
    assert set(prs) == {1, 2, 4}
    with pytest.raises(ConfChangeError):
        changer(new, prs).apply(ConfChange())


# -- random sequences against a naive model -----------------------------------------------


@dataclass
class Model:
    """The configuration as plain sets, changed the naive way."""

    voters: set[int]
    learners: set[int]
    outgoing: set[int] = field(default_factory=set)
    learners_next: set[int] = field(default_factory=set)
    auto_leave: bool = False

    def members(self) -> set[int]:
        return self.voters | self.outgoing | self.learners | self.learners_next

    def apply(self, cc: ConfChange) -> Model | None:
        """The model after `cc`, or None when it must be refused."""
        if not cc.changes:
            if not self.outgoing:
                return None
            return Model(set(self.voters), self.learners | self.learners_next)
        joint = cc.transition != ConfChangeTransition.AUTO or len(cc.changes) > 1
        if self.outgoing or (joint and not self.voters):
            return None
        new = Model(set(self.voters), set(self.learners))
        if joint:
            new.outgoing = set(self.voters)
            new.auto_leave = cc.transition != ConfChangeTransition.JOINT_EXPLICIT
        for c in cc.changes:
            n = c.node_id
            if n == 0:
                return None
            new.voters.discard(n)
            new.learners.discard(n)
            new.learners_next.discard(n)
            if c.type == VOTER:
                new.voters.add(n)
            elif c.type == LEARNER:
                (new.learners_next if n in new.outgoing else new.learners).add(n)
        if not new.voters:
            return None
        if not joint and len(new.voters ^ self.voters) > 1:
            return None
        return new


single_changes = st.builds(
    ConfChangeSingle, type=st.sampled_from(list(ConfChangeType)), node_id=st.integers(0, 6)
)
conf_changes = st.one_of(
    st.just(ConfChange()),
    st.builds(
        ConfChange,
        changes=st.lists(single_changes, min_size=1, max_size=4).map(tuple),
        transition=st.sampled_from(list(ConfChangeTransition)),
    ),
    single_changes.map(lambda c: ConfChange(changes=(c,))),
)


@st.composite
def initial_configs(draw: st.DrawFn) -> tuple[set[int], set[int]]:
    voters = draw(st.sets(st.integers(1, 6), min_size=1, max_size=5))
    learners = draw(st.sets(st.integers(1, 6).filter(lambda n: n not in voters), max_size=3))
    return voters, learners


def check_invariants(config: TrackerConfig, progress: dict[int, Progress]) -> None:
    assert config.voters, "zero voters"
    assert not (config.learners & (config.voters | config.voters_outgoing)), "voter and learner"
    assert config.learners_next <= config.voters_outgoing
    assert not (config.learners_next & config.voters)
    if not config.is_joint():
        assert not config.learners_next
        assert not config.auto_leave
    members = config.voters | config.voters_outgoing | config.learners | config.learners_next
    assert set(progress) == members, "progress for exactly the members"
    for node_id, pr in progress.items():
        assert pr.is_learner == (node_id in config.learners), node_id


@settings(max_examples=250, deadline=None)
@given(start=initial_configs(), ccs=st.lists(conf_changes, min_size=1, max_size=12))
def test_random_change_sequences_agree_with_the_model(
    start: tuple[set[int], set[int]], ccs: list[ConfChange]
) -> None:
    voters, learners = start
    config, progress = setup(voters, learners)
    matches = {n: pr.match for n, pr in progress.items()}
    model = Model(set(voters), set(learners))
    for cc in ccs:
        before = snapshot_of(config, progress)
        expected = model.apply(cc)
        try:
            new, prs = changer(config, progress).apply(cc)
        except ConfChangeError:
            assert expected is None, f"{cc} refused, the model accepts it: {expected}"
            assert snapshot_of(config, progress) == before
            continue
        assert expected is not None, f"{cc} accepted, the model refuses it: {new}"
        assert snapshot_of(config, progress) == before, "the inputs were mutated"
        assert (new.voters, new.voters_outgoing, new.learners, new.learners_next) == (
            expected.voters,
            expected.outgoing,
            expected.learners,
            expected.learners_next,
        )
        assert new.auto_leave == expected.auto_leave
        if not cc.changes:
            # Leaving yields the incoming config, with learners_next moved to learners.
            assert new.voters == config.voters
            assert new.learners == config.learners | config.learners_next
        elif new.is_joint():
            assert new.voters_outgoing == config.voters
        else:
            assert len(new.voters ^ config.voters) <= 1
        touched = {c.node_id for c in cc.changes}
        for node_id, pr in prs.items():
            # Members the change does not name keep what the leader knows of them; a
            # named one keeps it too or (removed and added back) starts afresh.
            allowed = {matches.get(node_id, 0)} | ({0} if node_id in touched else set())
            assert pr.match in allowed, node_id
        matches = {n: pr.match for n, pr in prs.items()}
        check_invariants(new, prs)
        config, progress, model = new, prs, expected
