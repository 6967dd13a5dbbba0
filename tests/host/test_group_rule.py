"""A group's rule is the group's, not the node's: every member deduplicates with the
session limits its creator fixed, whatever its own configuration says; and a rule
record round-trips, reads format 1, and refuses garbage."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack
import pytest

from copycat.host import ReplicaRule, new_incarnation

if TYPE_CHECKING:
    from .conftest import Cluster

GID = 0x5EED


@pytest.mark.asyncio
async def test_members_configured_differently_deduplicate_with_the_groups_limits(
    cluster: Cluster,
) -> None:
    # init: two nodes whose own session limits differ; the group's rule fixes others
    await cluster.add(1, session_ttl_entries=50_000, max_sessions=100)
    await cluster.add(2, session_ttl_entries=900_000, max_sessions=9_000)
    rule = ReplicaRule(2, incarnation=7, session_ttl_entries=123_456, max_sessions=321)
    cluster.hosts[1].create_group(GID, [1, 2], meta=rule.encode())
    cluster.hosts[2].open_member(GID, meta=rule.encode())
    cluster.hosts[1].campaign(GID)
    await cluster.wait_leader(GID)

    # act
    feeds = [cluster.hosts[n].attach_feed(GID, lambda: b"") for n in (1, 2)]

    # check: both members use the group's limits
    for feed in feeds:
        assert (feed.table.ttl_entries, feed.table.max_sessions) == (123_456, 321)


@pytest.mark.asyncio
async def test_a_group_without_limits_in_its_rule_uses_the_nodes(cluster: Cluster) -> None:
    await cluster.add(1, session_ttl_entries=50_000, max_sessions=100)
    cluster.hosts[1].create_group(GID, [1], meta=ReplicaRule(1).encode())
    feed = cluster.hosts[1].attach_feed(GID, lambda: b"")
    assert (feed.table.ttl_entries, feed.table.max_sessions) == (50_000, 100)


def test_a_rule_round_trips_reads_format_1_and_refuses_garbage() -> None:
    rule = ReplicaRule(3, 2, incarnation=99, session_ttl_entries=10, max_sessions=20)
    assert ReplicaRule.decode(rule.encode()) == rule
    assert ReplicaRule.from_ints(*rule.ints()) == rule
    assert ReplicaRule.decode(msgpack.packb([1, 3, 0])) == ReplicaRule(3)
    for bad in (
        b"",
        b"\xc1",
        msgpack.packb([2, 0, 0, 0, 0, 0]),
        msgpack.packb([2, 3, -1, 0, 0, 0]),
        msgpack.packb([9, 3, 0]),
    ):
        assert ReplicaRule.decode(bad) is None


def test_a_younger_group_has_a_larger_incarnation() -> None:
    older = new_incarnation(1_000, 0x7FFF)
    younger = new_incarnation(1_001, 0)
    assert 0 < older < younger < 1 << 63
    assert new_incarnation(1_000, 1) != new_incarnation(1_000, 2)
