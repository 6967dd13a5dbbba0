"""`Membership` in one process over an in-memory lossy gossip layer (tests/membership/
fakegossip.py): directory pull and retry, deltas proportional to the change, restarts,
failures, anti-entropy repair, hostile messages, event subscriptions. Every wait is bounded."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import msgpack
import pytest

from copycat.errors import ClosedError
from copycat.membership import (
    DirectoryChanged,
    DirectoryEntry,
    EventsLost,
    MemberFailed,
    MemberJoined,
    Membership,
    MembershipConfig,
    Role,
)
from copycat.membership._wire import MAGIC, WIRE_VERSION, ChunkKind, encode_chunks

from .fakegossip import FakeGossip, FakeNetwork

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.asyncio

WAIT_S = 10.0


def make(net: FakeNetwork, node_id: int, **fields: object) -> Membership:
    settings: dict[str, object] = {
        "node_id": node_id,
        "gossip_port": 0,
        "sync_timeout_s": 0.05,
        "anti_entropy_interval_s": 0.2,
        "meta_flush_interval_s": 0.01,
        "transport_address": f"127.0.0.1:{9000 + node_id}",
        "data_center": f"dc{node_id % 2}",
        "rack": f"r{node_id}",
    }
    settings.update(fields)
    config = MembershipConfig(**settings)  # type: ignore[arg-type]
    return Membership(config, gossip_factory=lambda c, meta: FakeGossip(net, c.gossip_name, meta))


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.01)


def entries(prefix: str, count: int, node: int, role: Role = Role.VOTER) -> list[DirectoryEntry]:
    return [
        DirectoryEntry(
            data_structure_id=f"{prefix}-{i:05d}", group_id=1000 + i, replica_id=node, role=role
        )
        for i in range(count)
    ]


def sees_all(m: Membership, prefix: str, count: int, node: int, role: Role) -> bool:
    return all(
        any(r.node_id == node and r.role is role for r in m.locate(f"{prefix}-{i:05d}"))
        for i in range(count)
    )


async def start_all(*nodes: Membership) -> None:
    for node in nodes:
        await node.start()


async def close_all(*nodes: Membership) -> None:
    for node in nodes:
        await node.close()


async def test_published_entries_reach_every_node_and_lookups_answer() -> None:
    net = FakeNetwork(seed=1)
    a, b, c = make(net, 1), make(net, 2), make(net, 3)
    await start_all(a, b, c)
    try:
        version = a.publish(upsert=entries("ds", 500, node=1))
        assert version == 1
        await until(lambda: all(sees_all(m, "ds", 500, 1, Role.VOTER) for m in (b, c)), "converge")
        assert b.group_of("ds-00007") == 1007
        assert b.locate("missing") == ()
        assert b.group_of("missing") is None
        assert c.address_of(1) == "127.0.0.1:9001"
        assert c.address_of(3) == "127.0.0.1:9003"
        assert c.address_of(99) is None
        view = c.view()
        assert view.node_ids == (1, 2, 3)
        assert view.local_node_id == 3
        assert 2 in view
        assert view.topology() == {"dc0": {"r2": (2,)}, "dc1": {"r1": (1,), "r3": (3,)}}
        assert c.view() is view  # unchanged membership: the same immutable snapshot
    finally:
        await close_all(a, b, c)


async def test_a_node_name_travels_in_the_metadata() -> None:
    net = FakeNetwork(seed=2)
    a, b = make(net, 1, node_name="eu-west-1a"), make(net, 2)
    await start_all(a, b)
    try:
        await until(lambda: 1 in b.view() and 2 in a.view(), "both views")
        names = {m.node_id: m.name for m in b.view().members}
        assert names == {1: "eu-west-1a", 2: "127.0.0.1:9002"}
        assert {m.node_id: m.name for m in a.view().members} == names
    finally:
        await close_all(a, b)


async def test_lossy_network_converges_through_retries() -> None:
    net = FakeNetwork(seed=7, loss=0.3)
    a, b, c = make(net, 1, max_chunk_bytes=4096), make(net, 2), make(net, 3)
    await start_all(a, b, c)
    try:
        a.publish(upsert=entries("ds", 3000, node=1))
        await until(lambda: all(sees_all(m, "ds", 3000, 1, Role.VOTER) for m in (b, c)), "converge")
        retries = b.counters().sync_retries + c.counters().sync_retries
        assert retries > 0, "with 30% loss and ~20 chunks per pull, some pull must retry"
        assert net.dropped > 0
    finally:
        await close_all(a, b, c)


async def test_delta_bytes_grow_with_the_change_not_the_directory() -> None:
    net = FakeNetwork(seed=3)
    a, b = make(net, 1), make(net, 2)
    await start_all(a, b)
    try:
        a.publish(upsert=entries("ds", 5000, node=1))
        await until(lambda: sees_all(b, "ds", 5000, 1, Role.VOTER), "initial converge")
        full_bytes = b.counters().sync_bytes_received

        async def change_roles(count: int, role: Role) -> int:
            before = b.counters().sync_bytes_received
            a.publish(upsert=entries("ds", count, node=1, role=role))
            await until(lambda: sees_all(b, "ds", count, 1, role), f"{count} role changes")
            await until(lambda: b.peer_directory_version(1) == (a.directory_version,) * 2, "sync")
            return b.counters().sync_bytes_received - before

        small = await change_roles(100, Role.LEARNER)
        large = await change_roles(1000, Role.INTERACTIVE)
        assert large < full_bytes / 3, (large, full_bytes)
        assert 5 * small < large < 15 * small, (small, large)
        assert b.counters().deltas_applied >= 2
    finally:
        await close_all(a, b)


async def test_failed_member_leaves_view_and_lookups() -> None:
    net = FakeNetwork(seed=4)
    a, b = make(net, 1), make(net, 2)
    await start_all(a, b)
    events = b.events()
    try:
        a.publish(upsert=entries("ds", 10, node=1))
        await until(lambda: sees_all(b, "ds", 10, 1, Role.VOTER), "converge")
        net.kill("n1")
        await until(lambda: 1 not in b.view(), "failure seen")
        assert b.locate("ds-00001") == ()
        assert b.address_of(1) is None
        seen: list[object] = []
        async with asyncio.timeout(WAIT_S):
            async for event in events:
                seen.append(event)
                if isinstance(event, MemberFailed):
                    break
        assert any(isinstance(e, DirectoryChanged) and e.node_id == 1 for e in seen)
        failed = seen[-1]
        assert isinstance(failed, MemberFailed)
        assert failed.member.node_id == 1
    finally:
        await close_all(b)


async def test_restarted_node_gets_full_directories_and_old_run_is_dropped() -> None:
    net = FakeNetwork(seed=5)
    a, b, c = make(net, 1), make(net, 2), make(net, 3)
    await start_all(a, b, c)
    try:
        a.publish(upsert=entries("a", 200, node=1))
        b.publish(upsert=entries("b", 300, node=2))
        c.publish(upsert=entries("old", 50, node=3))
        await until(lambda: sees_all(a, "old", 50, 3, Role.VOTER), "old run's entries seen")
        net.kill("n3")
        await c.close(leave=False)
        c2 = make(net, 3)
        await c2.start()
        assert c2.epoch > c.epoch
        c2.publish(upsert=entries("new", 20, node=3))
        await until(
            lambda: sees_all(c2, "a", 200, 1, Role.VOTER) and sees_all(c2, "b", 300, 2, Role.VOTER),
            "restarted node has every directory",
        )
        assert c2.counters().full_syncs >= 2
        await until(lambda: sees_all(a, "new", 20, 3, Role.VOTER), "new run's entries seen")
        assert a.locate("old-00001") == ()
        member = a.view().member(3)
        assert member is not None
        assert member.epoch == c2.epoch
        await c2.close()
    finally:
        await close_all(a, b)


async def test_anti_entropy_repairs_a_diverged_copy() -> None:
    net = FakeNetwork(seed=6)
    a, b = make(net, 1), make(net, 2)
    await start_all(a, b)
    try:
        a.publish(upsert=entries("ds", 100, node=1))
        await until(lambda: sees_all(b, "ds", 100, 1, Role.VOTER), "converge")
        # Corrupt b's copy behind its back: the digest it keeps no longer matches.
        copy = b._peers[1].directory
        assert copy is not None
        copy._entries.pop(("ds-00003", 1003, 1))
        before = b.counters().full_syncs
        await until(lambda: b.counters().anti_entropy_repairs >= 1, "anti-entropy noticed")
        await until(lambda: b.counters().full_syncs > before, "full pull")
        assert copy is b._peers[1].directory
        assert ("ds-00003", 1003, 1) in copy.entries()
    finally:
        await close_all(a, b)


def _chunk(**fields: object) -> bytes:
    values: dict[str, object] = {
        "request_id": 1,
        "epoch": 1,
        "kind": ChunkKind.DELTA,
        "from_version": 0,
        "to_version": 1,
        "digest": 0,
        "changes": ((("x", 1, 1), Role.VOTER),),
        "max_bytes": 60_000,
    }
    values.update(fields)
    return encode_chunks(**values)[0]  # type: ignore[arg-type]


async def test_hostile_messages_are_refused_counted_and_harmless() -> None:
    net = FakeNetwork(seed=8)
    a, b = make(net, 1), make(net, 2)
    await start_all(a, b)
    try:
        gossip_b = b._gossip
        assert isinstance(gossip_b, FakeGossip)
        hostile = [
            b"",
            b"\xc1",  # never used in msgpack
            b"\x92\x01\x02",
            msgpack.packb([MAGIC, WIRE_VERSION + 1, 1, 1, 1, 0, False]),
            msgpack.packb([MAGIC, WIRE_VERSION, 99]),
            msgpack.packb([MAGIC, WIRE_VERSION, 1, -1, 1, 0, False]),
            msgpack.packb([MAGIC, WIRE_VERSION, 2, 1, 1, 0, 0, 1, b"x" * 16, 5, 2, []]),
            msgpack.packb([MAGIC, WIRE_VERSION, 2, 1, 1, 0, 0, 1, b"x" * 16, 0, 1, [[1, 2, 3]]]),
            msgpack.packb(
                [MAGIC, WIRE_VERSION, 2, 1, 1, 0, 0, 1, b"x" * 16, 0, 1, [["d", 0, 1, 0]]]
            ),
            msgpack.packb(
                [MAGIC, WIRE_VERSION, 2, 1, 1, 0, 0, 1, b"x" * 16, 0, 1, [["d", 1, 1, 9]]]
            ),
            b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
            b"x" * 70_000,
        ]
        for data in hostile:
            gossip_b.inject("n1", data)
        gossip_b.inject("n1", _chunk(request_id=424242))  # answers nothing b asked
        await until(lambda: b.counters().messages_refused == len(hostile), "all refused")
        await until(lambda: b.counters().stale_chunks == 1, "stale chunk counted")
        a.publish(upsert=entries("ds", 20, node=1))
        await until(lambda: sees_all(b, "ds", 20, 1, Role.VOTER), "still syncing")
    finally:
        await close_all(a, b)


async def test_slow_subscriber_reads_events_lost_first() -> None:
    net = FakeNetwork(seed=9)
    a = make(net, 1, event_buffer=3)
    await a.start()
    try:
        events = a.events()
        for i in range(10):
            a.publish(upsert=entries(f"p{i}", 1, node=1))
        first = await asyncio.wait_for(events.__anext__(), WAIT_S)
        assert first == EventsLost(count=7)
        rest = [await asyncio.wait_for(events.__anext__(), WAIT_S) for _ in range(3)]
        assert [e.version for e in rest if isinstance(e, DirectoryChanged)] == [8, 9, 10]
        events.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(events.__anext__(), WAIT_S)
    finally:
        await a.close()


async def test_member_without_copycat_metadata_is_ignored() -> None:
    net = FakeNetwork(seed=10)
    a = make(net, 1)
    await a.start()
    events = a.events()
    stranger = FakeGossip(net, "stranger", {"role": "cache"})
    await stranger.start()
    await stranger.join([])
    b = make(net, 2)
    await b.start()
    try:
        await until(lambda: 2 in a.view(), "b joined")
        assert a.view().node_ids == (1, 2)
        assert a.counters().members_ignored == 1
        joined = await asyncio.wait_for(events.__anext__(), WAIT_S)
        assert isinstance(joined, MemberJoined)
        assert joined.member.node_id == 2
    finally:
        await close_all(a, b)


async def test_closed_membership_refuses_use() -> None:
    net = FakeNetwork(seed=11)
    a = make(net, 1)
    await a.start()
    await a.close()
    await a.close()  # closing again does nothing
    with pytest.raises(ClosedError):
        a.publish(upsert=entries("ds", 1, node=1))
    with pytest.raises(ClosedError):
        a.events()


async def test_publish_refuses_bad_keys_and_changes_nothing() -> None:
    net = FakeNetwork(seed=12)
    a = make(net, 1)
    await a.start()
    try:
        a.publish(upsert=entries("ds", 3, node=1))
        with pytest.raises(ValueError, match="group_id"):
            a.publish(upsert=entries("x", 1, node=1), remove=[("ds-00000", 0, 1)])
        assert a.directory_version == 1
        assert len(a.directory()) == 3
        assert a.publish(remove=[entries("ds", 1, node=1)[0]]) == 2
        assert a.locate("ds-00000") == ()
        assert a.publish(remove=[("absent", 1, 1)]) == 2  # nothing changed: no new version
    finally:
        await a.close()


async def test_the_drift_check_rehashes_a_large_directory_every_few_rounds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The anti-entropy round's self-check (a digest that drifted from its entries is
    logged as a bug) runs every round on a small directory, and every
    ceil(held / DRIFT_CHECK_ENTRIES) rounds on a large one, so it costs a bounded CPU
    per round however many groups a node hosts."""
    from copycat.membership import _membership
    from copycat.membership._directory import DirectoryLog

    net = FakeNetwork(seed=4)
    a = make(net, 1)
    await a.start()
    try:
        a.publish(upsert=entries("ds", 25, node=1))
        hashed: list[int] = []
        real = DirectoryLog.recompute_digest

        def counting(log: DirectoryLog) -> int:
            hashed.append(len(log))
            return real(log)

        monkeypatch.setattr(DirectoryLog, "recompute_digest", counting)
        for _ in range(6):
            a._anti_entropy_round()
        assert len(hashed) == 6, "25 entries are under the budget: checked every round"

        monkeypatch.setattr(_membership, "DRIFT_CHECK_ENTRIES", 10)
        hashed.clear()
        a._drift_check_in = 0
        for _ in range(9):
            a._anti_entropy_round()
        assert len(hashed) == 3, "25 entries, 10 per round on average: every 3rd round"

        a._log._digest ^= 1  # a drift: the check must still notice it
        caplog.set_level("ERROR", logger="copycat.membership")
        for _ in range(3):
            a._anti_entropy_round()
        assert any("drifted" in r.getMessage() for r in caplog.records)
    finally:
        await a.close()
