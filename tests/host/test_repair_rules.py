"""Repair by evidence (copycat.host.Repair): a voter is replaced only when gossip and
the leader's own raft traffic both say it is gone and a replacement exists; the
replacement is caught up and promoted before the failed voter is removed; a learner is
never removed for being unreachable; a member learns of its removal only from a proof by
the group's current leader."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.host import (
    RULE_INTS,
    Host,
    MembershipProof,
    Method,
    Repair,
    RepairConfig,
    ReplicaRule,
    Session,
    decode_ints,
)
from copycat.host._control import decode_proof, encode_proof
from copycat.membership import MemberInfo, MemberState, View

from .conftest import until

if TYPE_CHECKING:
    from .conftest import Cluster

pytestmark = pytest.mark.timeout(60)

GID = 0xD00D
GRACE_S = 0.3


class Gossip:
    """What gossip says: the live nodes, changed by the test."""

    def __init__(self, nodes: set[int]) -> None:
        self.live = set(nodes)
        self.generation = 1

    def fail(self, node_id: int) -> None:
        self.live.discard(node_id)
        self.generation += 1

    def view(self, local: int) -> View:
        members = tuple(
            MemberInfo(
                node_id=n,
                transport_address=f"127.0.0.1:{n}",
                data_center="dc1",
                rack=f"r{n}",
                state=MemberState.ALIVE,
                epoch=1,
                gossip_address=f"127.0.0.1:{n}",
                directory_version=0,
            )
            for n in sorted(self.live)
        )
        return View(local_node_id=local, generation=self.generation, members=members)


def repair_of(cluster: Cluster, node_id: int, gossip: Gossip, removed: list[int]) -> Repair:
    host = cluster.hosts[node_id]
    endpoint = cluster.endpoints[node_id]

    async def call(peer: int, method: str, body: bytes) -> bytes:
        return await endpoint.request(peer, method, body, timeout_s=2.0)

    repair = Repair(
        RepairConfig(node_id=node_id, repair_grace_s=GRACE_S, scan_interval_s=0.05, replicas=3),
        host,
        call=call,
        view=lambda: gossip.view(node_id),
        locate=lambda gid: set(),
        publish=lambda gid: None,
        on_removed=lambda gid, why: removed.append(gid),
    )
    return repair


async def start_replica_handlers(cluster: Cluster) -> None:
    """What the node's start_replica handler does, for every host of the cluster."""
    for host in cluster.hosts.values():

        async def serve(peer: int, body: bytes, host: Host = host) -> bytes:
            gid, *rule_ints = decode_ints(body, 1 + RULE_INTS)
            rule = ReplicaRule.from_ints(*rule_ints)
            host.open_member(gid, meta=None if rule is None else rule.encode())
            return b""

        cluster.endpoints[host.config.node_id].register_request_handler(Method.START_REPLICA, serve)


async def three_voters_and_a_spare(cluster: Cluster, *, spare: bool = True) -> tuple[int, int]:
    """Group GID on nodes 1-3 with a rule of 3 (node 4 free when `spare`); returns
    (leader, victim), the victim being a follower."""
    for node_id in (1, 2, 3, 4) if spare else (1, 2, 3):
        await cluster.add(node_id)
    await start_replica_handlers(cluster)
    meta = ReplicaRule(3).encode()
    cluster.hosts[1].create_group(GID, [1, 2, 3], meta=meta)
    for node_id in (2, 3):
        cluster.hosts[node_id].open_member(GID, meta=meta)
    cluster.hosts[1].campaign(GID)
    leader = await cluster.wait_leader(GID)
    victim = max(n for n in (1, 2, 3) if n != leader)
    return leader, victim


def isolate(cluster: Cluster, gossip: Gossip, node_id: int, nodes: tuple[int, ...]) -> None:
    """Cut `node_id` off from `nodes` (no raft traffic) and have gossip report it failed."""
    for other in nodes:
        if other != node_id:
            cluster.faults.cut(node_id, other)
    gossip.fail(node_id)


async def scan_for(repair: Repair, seconds: float) -> None:
    """Let the repair loop run many scans."""
    repair.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        await repair.stop()


def record_changes(host: Host, log: list[tuple[object, ...]]) -> None:
    """Wrap the leader's membership changes to record their order, and at the moment a
    voter is removed, whether every other voter held everything committed."""
    add, remove = host.add_member, host.remove_member

    async def add_member(gid: int, node_id: int, *, voter: bool) -> None:
        log.append(("add", node_id, voter))
        await add(gid, node_id, voter=voter)

    async def remove_member(gid: int, node_id: int) -> None:
        status = host.groups[gid].raw.status()
        caught_up = all(
            pr.match >= status.commit
            for n, pr in status.progress.items()
            if n != node_id and not pr.is_learner
        )
        log.append(("remove", node_id, frozenset(status.conf_state.voters), caught_up))
        await remove(gid, node_id)

    host.add_member = add_member  # type: ignore[method-assign]
    host.remove_member = remove_member  # type: ignore[method-assign]


@pytest.mark.asyncio
async def test_a_failed_voter_is_removed_only_after_its_replacement_caught_up(
    cluster: Cluster,
) -> None:
    # init: voters 1-3, node 4 free; the victim's node is cut off and gossip says failed
    leader, victim = await three_voters_and_a_spare(cluster)
    for n in range(20):
        await cluster.hosts[leader].propose(GID, Session(), f"v{n}".encode())
    gossip = Gossip({1, 2, 3, 4})
    changes: list[tuple[object, ...]] = []
    record_changes(cluster.hosts[leader], changes)
    repair = repair_of(cluster, leader, gossip, [])
    isolate(cluster, gossip, victim, (1, 2, 3, 4))

    # act
    repair.start()
    try:
        await until(
            lambda: victim not in cluster.hosts[leader].groups[GID].raw.conf_state().voters,
            20,
        )
    finally:
        await repair.stop()

    # check: learner, caught up, promoted, and only then the victim removed
    assert changes[:3] == [
        ("add", 4, False),
        ("add", 4, True),
        ("remove", victim, frozenset({1, 2, 3, 4}), True),
    ]
    assert cluster.hosts[leader].groups[GID].raw.conf_state().voters == {1, 2, 3, 4} - {victim}


@pytest.mark.asyncio
async def test_a_failed_voter_without_a_replacement_stays(cluster: Cluster) -> None:
    # init: three nodes, three voters: no node can take the victim's place
    leader, victim = await three_voters_and_a_spare(cluster, spare=False)
    gossip = Gossip({1, 2, 3})
    changes: list[tuple[object, ...]] = []
    record_changes(cluster.hosts[leader], changes)
    repair = repair_of(cluster, leader, gossip, [])
    isolate(cluster, gossip, victim, (1, 2, 3))

    # act: many scans past the grace
    await scan_for(repair, GRACE_S * 8)

    # check: the group was not shrunk below its rule
    assert changes == []
    assert cluster.hosts[leader].groups[GID].raw.conf_state().voters == {1, 2, 3}


@pytest.mark.asyncio
async def test_gossip_alone_does_not_replace_a_voter_raft_still_hears(cluster: Cluster) -> None:
    # init: gossip says the victim failed (a gossip-only partition), raft traffic flows
    leader, victim = await three_voters_and_a_spare(cluster)
    gossip = Gossip({1, 2, 3, 4})
    changes: list[tuple[object, ...]] = []
    record_changes(cluster.hosts[leader], changes)
    repair = repair_of(cluster, leader, gossip, [])
    gossip.fail(victim)
    cluster.hosts[leader].node_failed(victim)  # wakes the group: heartbeats flow

    # act: proposals keep the victim talking while many scans pass the grace
    repair.start()
    try:
        for n in range(int(GRACE_S * 8 / 0.05)):
            await cluster.hosts[leader].propose(GID, Session(), f"v{n}".encode())
            await asyncio.sleep(0.05)
    finally:
        await repair.stop()

    # check
    assert changes == []
    assert victim in cluster.hosts[leader].groups[GID].raw.conf_state().voters


@pytest.mark.asyncio
@pytest.mark.parametrize("reported", [True, False], ids=["failure-reported", "absent-from-view"])
async def test_gossip_alone_does_not_replace_a_voter_of_an_idle_group(
    cluster: Cluster, reported: bool
) -> None:
    # init: an idle group (its leader quiesces once every member holds its log); gossip
    # says the victim is gone (a gossip-only partition: the failure is reported; or a
    # leader that restarted and never saw the victim in its view: nothing is reported),
    # while raft's packets between the leader and the victim still get through
    leader, victim = await three_voters_and_a_spare(cluster)
    host = cluster.hosts[leader]
    await until(lambda: host.quiescent_groups() == 1)
    gossip = Gossip({1, 2, 3, 4})
    changes: list[tuple[object, ...]] = []
    record_changes(host, changes)
    repair = repair_of(cluster, leader, gossip, [])
    gossip.fail(victim)
    if reported:
        host.node_failed(victim)

    # act: many scans past the grace, with no proposal to make anyone talk
    await scan_for(repair, GRACE_S * 8)

    # check: the leader kept asking (it stayed awake) and heard the victim answer
    assert changes == []
    assert victim in host.groups[GID].raw.conf_state().voters
    assert host.quiescent_groups() == 0
    assert host.unheard_for(GID, victim) < GRACE_S


@pytest.mark.asyncio
async def test_a_failed_voter_of_an_idle_group_is_replaced(cluster: Cluster) -> None:
    # init: an idle, quiescent group whose victim is then cut off for real
    leader, victim = await three_voters_and_a_spare(cluster)
    host = cluster.hosts[leader]
    await until(lambda: host.quiescent_groups() == 1)
    gossip = Gossip({1, 2, 3, 4})
    changes: list[tuple[object, ...]] = []
    record_changes(host, changes)
    repair = repair_of(cluster, leader, gossip, [])
    isolate(cluster, gossip, victim, (1, 2, 3, 4))

    # act: gossip's report is not forwarded to the host (the repair alone must notice)
    repair.start()
    try:
        await until(lambda: victim not in host.groups[GID].raw.conf_state().voters)
    finally:
        await repair.stop()

    # check: replaced, the replacement first (the silence counted only while awake)
    assert [c[:2] for c in changes] == [("add", 4), ("add", 4), ("remove", victim)]


@pytest.mark.asyncio
async def test_an_unreachable_learner_is_never_removed(cluster: Cluster) -> None:
    # init: voters 1-3 and a subscriber's learner on node 4, which is then cut off
    leader, _ = await three_voters_and_a_spare(cluster)
    cluster.hosts[4].open_member(GID)
    await cluster.hosts[leader].add_member(GID, 4, voter=False)
    gossip = Gossip({1, 2, 3, 4})
    changes: list[tuple[object, ...]] = []
    record_changes(cluster.hosts[leader], changes)
    repair = repair_of(cluster, leader, gossip, [])
    isolate(cluster, gossip, 4, (1, 2, 3))

    # act
    await scan_for(repair, GRACE_S * 8)

    # check
    assert changes == []
    assert 4 in cluster.hosts[leader].groups[GID].raw.conf_state().learners


# -- removal learned from a proof ---------------------------------------------------------


def test_a_proof_round_trips_and_malformed_ones_are_refused() -> None:
    proof = MembershipProof(term=7, voters=frozenset({1, 2}), learners=frozenset({9}))
    assert decode_proof(encode_proof(proof)) == proof
    assert decode_proof(encode_proof(None)) is None
    for bad in (
        b"",
        b"\xc1",
        encode_proof(None)[:0] + b"\x93\x01\x02\x03",
        b"\x94\x01\x00\x90\x90",
    ):
        with pytest.raises(ValueError, match="membership proof"):
            decode_proof(bad)


@pytest.mark.asyncio
async def test_only_a_leader_that_committed_in_its_term_gives_a_proof(cluster: Cluster) -> None:
    leader, victim = await three_voters_and_a_spare(cluster, spare=False)
    await cluster.hosts[leader].propose(GID, Session(), b"x")
    proof = cluster.hosts[leader].membership_proof(GID)
    assert proof is not None
    assert proof.voters == {1, 2, 3}
    assert cluster.hosts[victim].membership_proof(GID) is None  # a follower proves nothing


@pytest.mark.parametrize(
    ("reply_term", "holds", "expected", "removed"),
    [
        (None, False, None, False),  # not the leader: no proof, nothing decided
        (4, False, None, False),  # a leader of an older term than this member's: hearsay
        (5, True, True, False),  # the current leader counts this node in
        (6, False, False, True),  # the current leader proves it out
    ],
)
@pytest.mark.asyncio
async def test_a_member_drops_only_on_a_proof_from_a_current_leader(
    cluster: Cluster, reply_term: int | None, holds: bool, expected: bool | None, removed: bool
) -> None:
    # init: node 1 is a member (term 5 is faked below) of a group whose other member is
    # node 2; node 2 answers with the proof of the case
    await cluster.add(1)
    cluster.hosts[1].create_group(GID, [1, 2])
    await until(lambda: cluster.hosts[1].groups[GID].raw.conf_state().voters == {1, 2})
    dropped: list[int] = []
    repair = repair_of(cluster, 1, Gossip({1}), dropped)
    reply = encode_proof(
        None
        if reply_term is None
        else MembershipProof(
            term=reply_term, voters=frozenset({2, 1} if holds else {2}), learners=frozenset()
        )
    )

    async def call(peer: int, method: str, body: bytes) -> bytes:
        assert (peer, method) == (2, Method.MEMBERSHIP_PROOF)
        return reply

    repair._call = call
    cluster.hosts[1].term_of = lambda gid: 5  # type: ignore[method-assign]

    # act
    result = await repair.check_membership(GID)

    # check
    assert result is expected
    assert dropped == ([GID] if removed else [])


@pytest.mark.asyncio
async def test_a_member_removed_then_added_back_while_cut_off_stays(cluster: Cluster) -> None:
    # init: voters 1-4; the leader sends one entry per append message, so the cut-off
    # member applies its removal in one cycle and hears of its return only later, with
    # the node's wiring: the host's report goes to the repair, which asks for a proof
    for node_id in (1, 2, 3, 4):
        await cluster.add(node_id, max_msg_bytes=1)
    await start_replica_handlers(cluster)
    leader = await cluster.start_group(GID, [1, 2, 3, 4])
    assert leader != 4
    lead, member = cluster.hosts[leader], cluster.hosts[4]
    for n in range(3):
        await lead.propose(GID, Session(), f"before-{n}".encode())
    await until(lambda: member.groups[GID].raw.applied_index() >= lead.groups[GID].applied)
    removed: list[int] = []
    repair = repair_of(cluster, 4, Gossip({1, 2, 3, 4}), removed)
    member.on_removed = repair.applied_own_removal
    cluster.endpoints[leader].register_request_handler(
        Method.MEMBERSHIP_PROOF,
        repair_of(cluster, leader, Gossip({1, 2, 3, 4}), []).serve_membership_proof,
    )
    for other in (1, 2, 3):
        cluster.faults.cut(4, other)

    # act: removed, a few entries, added back as a learner, more entries; then healed
    await lead.remove_member(GID, 4)
    for n in range(3):
        await lead.propose(GID, Session(), f"between-{n}".encode())
    await lead.add_member(GID, 4, voter=False)
    for n in range(3):
        await lead.propose(GID, Session(), f"after-{n}".encode())
    cluster.faults.heal_all()
    await until(lambda: member.groups[GID].raw.applied_index() >= lead.groups[GID].applied)
    await asyncio.sleep(GRACE_S * 3)  # any proof asked for has been answered
    await repair.stop()

    # check: it applied its removal and its return, and was never told it was removed
    assert removed == []
    assert GID in member.groups
    assert 4 in member.groups[GID].raw.conf_state().learners
    assert 4 in lead.groups[GID].raw.conf_state().learners
