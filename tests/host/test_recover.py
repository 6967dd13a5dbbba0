"""Disaster recovery at the host: `Host.force_sole_voter` makes a surviving member the
only voter of a group whose other voters are gone, keeping every entry it has; and
`Recovery` refuses while a majority of the voters is reachable or a leader is known.
(docs/operations.md, "Disaster recovery")"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.errors import RecoveryRefusedError
from copycat.host import Recovery, RecoveryRecord, Session
from copycat.host._force import plan_sole_voter
from copycat.membership import MemberInfo, MemberState, View
from copycat.raft import (
    ConfChange,
    ConfChangeTransition,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    add_learner,
    add_voter,
    bootstrap_entries,
    remove_node,
)
from copycat.storage import MemoryLogStore, WriteBatch

from .conftest import consume_into, until

if TYPE_CHECKING:
    from copycat.host import Host
    from copycat.storage import GroupLog

    from .conftest import Cluster

pytestmark = pytest.mark.timeout(60)

GID = 0xC0FFEE
TICK_S = 0.02


def view_of(local: int, alive: set[int]) -> View:
    """What gossip says, fixed by the test."""
    return View(
        local_node_id=local,
        generation=1,
        members=tuple(
            MemberInfo(
                node_id=n,
                transport_address=f"127.0.0.1:{n}",
                data_center="dc1",
                rack="r1",
                state=MemberState.ALIVE,
                epoch=1,
                gossip_address=f"127.0.0.1:{n}",
                directory_version=0,
            )
            for n in sorted(alive | {local})
        ),
    )


async def three_voters_led_by_1(cluster: Cluster) -> Host:
    for node_id in (1, 2, 3):
        await cluster.add(node_id, store=MemoryLogStore())
    leader = await cluster.start_group(GID, [1, 2, 3])
    h1 = cluster.hosts[1]
    if leader != 1:
        await cluster.hosts[leader].transfer_leader(GID, 1)
        await until(lambda: h1.group(GID).raw.is_leader())
    return h1


async def lose_two_voters(cluster: Cluster, h1: Host) -> None:
    await cluster.stop(2)
    await cluster.stop(3)
    h1.node_failed(2)  # what gossip tells the host: the group wakes
    h1.node_failed(3)
    # check_quorum: the lone leader steps down after an election timeout
    await until(lambda: h1.group_status(GID).leader_id == 0)  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_the_survivor_becomes_the_only_voter_and_keeps_every_entry(
    cluster: Cluster,
) -> None:
    # init: three voters; node 1 leads, its subscriber has 10 values; then node 1 is cut
    # off and takes 5 more proposals it alone holds (past its commit index)
    h1 = await three_voters_led_by_1(cluster)
    state: list[bytes] = []
    consumer = consume_into(h1.attach_feed(GID, lambda: b""), state)
    session = Session()
    for i in range(10):
        await h1.propose(GID, session, f"c{i}".encode())
    await until(lambda: len(state) == 10)
    cluster.faults.cut(1, 2)
    cluster.faults.cut(1, 3)
    before = h1.group_status(GID)
    assert before is not None
    pending = [asyncio.ensure_future(h1.propose(GID, session, f"u{i}".encode())) for i in range(5)]
    await until(lambda: h1.group(GID).log.last_index() >= before.last_index + 5)
    await lose_two_voters(cluster, h1)
    status = h1.group_status(GID)
    assert status is not None
    last, commit = h1.group(GID).log.last_index(), status.commit
    assert last > commit, "the test needs entries past the survivor's commit index"
    assert state == [f"c{i}".encode() for i in range(10)]

    # act
    plan = h1.force_sole_voter(GID)

    # check: the forced configuration, the log kept and committed, the record in it
    assert (plan.last_index, plan.commit_index) == (last, commit)
    assert plan.before.voters == {1, 2, 3}
    assert plan.recovery_index == last + 2  # two removals, one at a time
    assert plan.new_term > h1.group(GID).log.term(last)
    await until(lambda: h1.group(GID).raw.is_leader())
    after = h1.group_status(GID)
    assert after is not None
    assert after.voters == {1}
    assert after.commit >= plan.recovery_index
    entries = h1.group(GID).log.entries(1, plan.recovery_index + 1)
    assert [e.index for e in entries] == list(range(1, plan.recovery_index + 1))
    records = [RecoveryRecord.of_entry(e) for e in entries]
    assert all(r is None for r in records[:last])
    marks = records[last:]
    assert all(r is not None and r.last_index == last for r in marks)
    assert marks[0] is not None
    assert (marks[0].node_id, marks[0].voters_before, marks[0].commit_index) == (
        1,
        (1, 2, 3),
        commit,
    )
    # the host's records of the configuration agree with raft's
    assert h1.group(GID).conf_at(plan.recovery_index) == after_conf(h1)
    # the proposals the survivor alone held commit now; each value is delivered once
    await asyncio.wait_for(asyncio.gather(*pending), 10)
    await until(lambda: len(state) >= 15)
    assert state == [f"c{i}".encode() for i in range(10)] + [f"u{i}".encode() for i in range(5)]
    # and the group takes writes again
    await h1.propose(GID, session, b"after")
    await until(lambda: len(state) == 16)
    assert state[-1] == b"after"
    consumer.cancel()


def after_conf(host: Host) -> object:
    return host.group(GID).raw.conf_state()


@pytest.mark.asyncio
async def test_the_forced_configuration_survives_a_restart(cluster: Cluster) -> None:
    # init: a recovered survivor
    h1 = await three_voters_led_by_1(cluster)
    session = Session()
    for i in range(5):
        await h1.propose(GID, session, f"v{i}".encode())
    store = cluster.stores[1]
    await lose_two_voters(cluster, h1)
    plan = h1.force_sole_voter(GID)
    await until(lambda: h1.group(GID).raw.is_leader())

    # act: the node restarts from its store
    await cluster.stop(1)
    h1 = await cluster.add(1, store=store)

    # check: alone a voter, it elects itself and delivers everything once, in order
    await until(lambda: h1.group(GID).raw.is_leader())
    assert h1.group_status(GID).voters == {1}  # type: ignore[union-attr]
    assert h1.group(GID).log.last_index() >= plan.recovery_index
    state: list[bytes] = []
    consumer = consume_into(h1.attach_feed(GID, lambda: b""), state)
    await h1.propose(GID, Session(), b"after")
    await until(lambda: len(state) == 6)
    assert state == [f"v{i}".encode() for i in range(5)] + [b"after"]
    consumer.cancel()


@pytest.mark.asyncio
async def test_recovery_refuses_while_gossip_shows_a_majority(cluster: Cluster) -> None:
    # init: nodes 2 and 3 stopped, no leader; gossip still lists node 2
    h1 = await three_voters_led_by_1(cluster)
    await lose_two_voters(cluster, h1)
    recovery = Recovery(h1, lambda: view_of(1, {2}), heard_within_s=0.0)

    # act / check: refused, naming node 2 and gossip's word; nothing changed
    with pytest.raises(RecoveryRefusedError) as caught:
        await recovery.recover(GID)
    assert set(caught.value.reachable_voters) == {2}
    assert "gossip" in caught.value.reachable_voters[2]
    assert "node 2" in str(caught.value)
    assert caught.value.leader_id == 0
    assert h1.group_status(GID).voters == {1, 2, 3}  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_recovery_refuses_while_raft_heard_from_a_majority(cluster: Cluster) -> None:
    # init: gossip lists nobody, but node 1 heard from node 2 and 3 a moment ago
    h1 = await three_voters_led_by_1(cluster)
    await lose_two_voters(cluster, h1)
    recovery = Recovery(h1, lambda: view_of(1, set()), heard_within_s=3600.0)

    # act / check
    with pytest.raises(RecoveryRefusedError) as caught:
        await recovery.recover(GID, dry_run=True)
    assert set(caught.value.reachable_voters) == {2, 3}
    assert all("raft" in why for why in caught.value.reachable_voters.values())
    assert h1.group_status(GID).voters == {1, 2, 3}  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_recovery_refuses_while_the_group_has_a_leader(cluster: Cluster) -> None:
    # init: all three voters up, node 1 leads; the evidence would allow it otherwise
    h1 = await three_voters_led_by_1(cluster)
    recovery = Recovery(h1, lambda: view_of(1, set()), heard_within_s=0.0)

    # act / check: refused, naming the leader; nothing changed
    with pytest.raises(RecoveryRefusedError) as caught:
        await recovery.recover(GID)
    assert caught.value.leader_id == 1
    assert "leader" in str(caught.value)
    assert h1.group_status(GID).voters == {1, 2, 3}  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_dry_run_reports_what_may_be_lost_and_changes_nothing(cluster: Cluster) -> None:
    h1 = await three_voters_led_by_1(cluster)
    for i in range(3):
        await h1.propose(GID, Session(), f"v{i}".encode())
    await lose_two_voters(cluster, h1)
    recovery = Recovery(h1, lambda: view_of(1, set()), heard_within_s=0.0)
    last = h1.group(GID).log.last_index()

    report = await recovery.recover(GID, dry_run=True)

    assert not report.recovered
    assert report.last_index == last
    assert report.unreachable_voters == (2, 3)
    assert f"past index {last}" in report.describe()
    assert h1.group_status(GID).voters == {1, 2, 3}  # type: ignore[union-attr]
    assert h1.group(GID).log.last_index() == last
    # a real one then goes through
    done = await recovery.recover(GID)
    assert done.recovered
    assert h1.group_status(GID).voters == {1}  # type: ignore[union-attr]


# -- the plan alone, over a stored log -----------------------------------------------------


def stored_log(entries: list[Entry], commit: int) -> GroupLog:
    store = MemoryLogStore()
    batch = WriteBatch()
    batch.append(GID, entries)
    batch.set_hard_state(GID, HardState(term=2, commit=commit))
    store.commit(batch)
    return store.group(GID)


def change(index: int, cc: ConfChange, term: int = 2) -> Entry:
    return Entry(term=term, index=index, kind=EntryKind.CONF_CHANGE, data=cc.encode())


def test_the_plan_counts_changes_past_the_commit_index_and_promotes_a_learner() -> None:
    # init: voters 1, 2, 3 committed; then, past the commit index, learner 4 is added
    # and node 3 removed (uncommitted changes count: every entry is kept and committed)
    entries = [
        *bootstrap_entries([1, 2, 3]),
        Entry(term=2, index=4, data=b""),
        change(5, add_learner(4)),
        change(6, remove_node(3)),
    ]
    log = stored_log(entries, commit=4)

    # act: the survivor is learner 4
    plan = plan_sole_voter(log, 4)

    # check: 4 promoted, then 1 and 2 removed, one at a time, in a new term
    assert plan.before == ConfState(voters=frozenset({1, 2}), learners=frozenset({4}))
    assert plan.after.voters == {4}
    decoded = [ConfChange.decode(e.data) for e in plan.entries]
    assert [c.changes for c in decoded] == [
        add_voter(4).changes,
        remove_node(1).changes,
        remove_node(2).changes,
    ]
    assert [e.index for e in plan.entries] == [7, 8, 9]
    assert {e.term for e in plan.entries} == {3}
    assert plan.hard_state == HardState(term=3, vote=4, commit=9)
    assert [i for i, _ in plan.confs] == [1, 2, 3, 5, 6, 7, 8, 9]
    assert plan.confs[-1][1].voters == {4}
    assert all(RecoveryRecord.of_entry(e) is not None for e in plan.entries)
    assert all(RecoveryRecord.of_entry(e) is None for e in entries)


def test_the_plan_leaves_a_joint_configuration_first() -> None:
    # init: voters 1, 2, 3 enter a joint configuration towards 1, 4, 5 (explicit leave)
    joint = ConfChange(
        changes=(*add_voter(4).changes, *add_voter(5).changes, *remove_node(2).changes),
        transition=ConfChangeTransition.JOINT_EXPLICIT,
    )
    log = stored_log([*bootstrap_entries([1, 2, 3]), change(4, joint)], commit=4)

    plan = plan_sole_voter(log, 1)

    assert plan.before.is_joint()
    decoded = [ConfChange.decode(e.data) for e in plan.entries]
    assert decoded[0].leaves_joint()
    # the incoming half is 1, 3, 4, 5 (2 leaves with the outgoing half)
    assert [c.changes for c in decoded[1:]] == [
        remove_node(3).changes,
        remove_node(4).changes,
        remove_node(5).changes,
    ]
    assert RecoveryRecord.of_entry(plan.entries[0]).voters_before == (1, 2, 3, 4, 5)  # type: ignore[union-attr]
    assert plan.after == ConfState(voters=frozenset({1}))
