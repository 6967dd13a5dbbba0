"""Commit indexes written lazily (`Ready.commit_only`): they ride with the next write,
so a member's stored commit never trails its own compaction point or snapshot, and a
member restarted from its store resumes (raft refuses a stored commit below the log's
start)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from copycat.host import Session
from copycat.storage import LmdbLogStore, LogStore, WriteBatch
from tests.host.conftest import consume_into, until

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import Cluster

GID = 0xD1CE
PROPOSALS = 300


def _watch(store: LogStore, seen: list[str]) -> None:
    """After every write, check the stored commit against the stored log's start."""
    commit = store.commit

    def checked(batch: WriteBatch) -> None:
        commit(batch)
        if GID not in store.groups():
            return
        log = store.group(GID)
        hard_state, _ = log.initial_state()
        floor = max(log.first_index() - 1, log.snapshot_metadata().index)
        if hard_state.commit < floor:
            seen.append(f"stored commit {hard_state.commit} below {floor}")

    store.commit = checked  # type: ignore[method-assign]


@pytest.mark.asyncio
async def test_deferred_commits_never_trail_compaction(cluster: Cluster, tmp_path: Path) -> None:
    problems: list[str] = []
    for node_id in (1, 2, 3):
        store = LmdbLogStore(tmp_path / f"n{node_id}", durable=False)
        _watch(store, problems)
        await cluster.add(node_id, store=store, snapshot_every_entries=40, snapshot_keep_entries=0)
    await cluster.start_group(GID, [1, 2, 3])
    state: list[bytes] = []
    feed = cluster.hosts[2].attach_feed(GID, lambda: b"|".join(state))

    consumer = consume_into(feed, state)
    try:
        session = Session()
        for i in range(PROPOSALS):
            await cluster.hosts[2].propose(GID, session, b"%d" % i)
        await until(lambda: len(state) == PROPOSALS)
    finally:
        consumer.cancel()

    assert not problems
    assert all(h.counters["commit_writes_deferred"] > 0 for h in cluster.hosts.values())
    assert any(s.group(GID).first_index() > 1 for s in cluster.stores.values())

    # a member restarted from its store resumes and catches up with new proposals
    applied_before = cluster.hosts[3].groups[GID].applied
    await cluster.stop(3)
    cluster.stores[3].close()
    reopened = LmdbLogStore(tmp_path / "n3", durable=False)
    host = await cluster.add(3, store=reopened, snapshot_every_entries=40)
    await cluster.hosts[2].propose(GID, session, b"after restart")
    await until(lambda: host.groups[GID].applied > applied_before)
