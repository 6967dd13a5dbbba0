"""The real `Host` persists before it acknowledges (issue 12, STYLE.md section 6:
"Acknowledge only after fsync. Persist the term and vote before any vote leaves."; and
docs/ready-loop.md, one cycle, step 2: "Every message may depend on what step 1
persisted (a vote, an append acknowledgement), so none may leave before it").

The raft simulator's `vote_before_persist` / `ack_before_persist` switches exercise only
the simulator's own host loop; these tests record, for each node, what its `Host` hands
its transport (`Endpoint.send`, `Endpoint.flush`) and what it commits to its store
(`LogStore.commit`), in one shared list, and check at each send that the store already
holds what the message depends on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from copycat.host import Session
from copycat.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from copycat.storage import LogStore, MemoryLogStore
from copycat.storage._batch import OP_APPEND, OP_HARD_STATE, OP_INSTALL_SNAPSHOT
from tests.host.conftest import consume_into, until

if TYPE_CHECKING:
    from copycat.storage import WriteBatch

    from .conftest import Cluster

GID = 0xD0AB


@dataclass
class Recorder:
    """Events of every recorded node, in the order they happened, and the breaches
    found: a message handed to the transport before the store held what it vouches for."""

    events: list[tuple[int, str, object]] = field(default_factory=list)
    breaches: dict[str, list[str]] = field(default_factory=dict)
    vote_grants: dict[int, int] = field(default_factory=dict)
    append_acks: dict[int, int] = field(default_factory=dict)

    def record_store(self, node_id: int, store: MemoryLogStore) -> None:
        real_commit = store.commit

        def commit(batch: WriteBatch) -> None:
            real_commit(batch)  # durable once it returns (a failed commit is not)
            self.events.append((node_id, "commit", [op for op, _, _ in batch.ops]))

        store.commit = commit  # type: ignore[method-assign]

    def record_endpoint(self, node_id: int, cluster: Cluster) -> None:
        endpoint = cluster.endpoints[node_id]
        store = cluster.stores[node_id]
        real_send, real_flush = endpoint.send, endpoint.flush

        def send(group: int, message: Message) -> None:
            self.events.append((node_id, "send", message))
            self._check(node_id, store, group, message)
            real_send(group, message)

        def flush() -> None:
            self.events.append((node_id, "flush", None))
            real_flush()

        endpoint.send = send  # type: ignore[method-assign]
        endpoint.flush = flush  # type: ignore[method-assign]

    def _check(self, node_id: int, store: LogStore, gid: int, m: Message) -> None:
        if isinstance(m, RequestVote | RequestVoteResponse) and m.pre_vote:
            return  # pre-votes change no state: the core lets them go at once
        durable = store.group(gid)
        hard = durable.hard_state
        last = durable.last_index()
        what = f"node {node_id} sent {m!r} when its store held {hard!r}, last index {last}"

        def breach(kind: str) -> None:
            self.breaches.setdefault(kind, []).append(what)

        if m.term > hard.term:
            breach("term not durable")
        if isinstance(m, RequestVoteResponse) and not m.reject:
            self.vote_grants[node_id] = self.vote_grants.get(node_id, 0) + 1
            if (hard.term, hard.vote) != (m.term, m.to):
                breach("vote not durable")
        elif isinstance(m, RequestVote) and (hard.term, hard.vote) != (m.term, node_id):
            breach("own vote not durable")
        elif isinstance(m, AppendEntriesResponse) and not m.reject:
            self.append_acks[node_id] = self.append_acks.get(node_id, 0) + 1
            if last < m.index:
                breach("acknowledged entries not durable")
        elif isinstance(m, AppendEntries) and m.commit > last:
            # a leader may ship entries before its own write (thesis §10.2.1), but the
            # commit index it announces may count only entries it has made durable
            breach("commit counts entries not durable")

    def report(self) -> str:
        """The first breach of each kind (and how many there were)."""
        return "\n".join(
            f"{kind} ({len(found)}x), first: {found[0]}" for kind, found in self.breaches.items()
        )

    def commits_with(self, node_id: int, op: int) -> int:
        return sum(
            1
            for node, kind, ops in self.events
            if node == node_id and kind == "commit" and isinstance(ops, list) and op in ops
        )


async def _recorded_cluster(cluster: Cluster, recorder: Recorder, **config: object) -> None:
    for node_id in (1, 2, 3):
        store = MemoryLogStore()
        recorder.record_store(node_id, store)
        await cluster.add(node_id, store=store, **config)
        recorder.record_endpoint(node_id, cluster)


@pytest.mark.asyncio
async def test_votes_and_append_acks_leave_only_after_the_store_holds_them(
    cluster: Cluster,
) -> None:
    """Elections (a creator's campaign, then a leadership transfer) and replication in
    a group of three: every vote granted and every append acknowledged by a `Host` is
    handed to its transport only once its store holds the term, the vote and the entries
    the message vouches for."""
    # init: three recorded nodes, one new group created on node 1
    recorder = Recorder()
    await _recorded_cluster(cluster, recorder)
    cluster.hosts[1].create_group(GID, [1, 2, 3])
    for node_id in (2, 3):
        cluster.hosts[node_id].open_member(GID)
    cluster.hosts[1].campaign(GID)
    first = await cluster.wait_leader(GID)
    session = Session()

    # act: replicate, move the leadership (a second election), replicate again
    async with asyncio.timeout(20):
        for i in range(10):
            await cluster.hosts[first].propose(GID, session, b"a%d" % i)
        second = next(n for n in (1, 2, 3) if n != first)
        await cluster.hosts[first].transfer_leader(GID, second)
        await until(lambda: cluster.hosts[second].groups[GID].raw.is_leader())
        for i in range(10):
            await cluster.hosts[second].propose(GID, session, b"b%d" % i)
        last = cluster.hosts[second].groups[GID].raw.last_index()
        await until(lambda: all(h.groups[GID].applied >= last for h in cluster.hosts.values()))

    # check: the run exercised both kinds of acknowledgement, on followers
    followers_of_first = [n for n in (1, 2, 3) if n != first]
    assert sum(recorder.vote_grants.get(n, 0) for n in followers_of_first) >= 1
    assert sum(recorder.vote_grants.values()) >= 2, "two elections, a grant each at least"
    assert all(recorder.append_acks.get(n, 0) >= 10 for n in followers_of_first)
    assert recorder.commits_with(second, OP_HARD_STATE) >= 1
    assert all(recorder.commits_with(n, OP_APPEND) >= 1 for n in (1, 2, 3))
    # check: no message went out ahead of the write it depends on
    assert not recorder.breaches, recorder.report()


@pytest.mark.asyncio
async def test_a_member_catching_up_acknowledges_only_what_it_wrote(
    cluster: Cluster,
) -> None:
    """A member cut off while the others commit (and compact past it) catches up from
    the leader's snapshot after the cut heals: its acknowledgements still follow the
    writes (the snapshot install included) that make them true."""
    # init: three recorded nodes compacting often, so a lagging member may need a snapshot
    recorder = Recorder()
    await _recorded_cluster(cluster, recorder, snapshot_every_entries=5, snapshot_keep_entries=0)
    leader = await cluster.start_group(GID, [1, 2, 3])
    state: list[bytes] = []
    feed = cluster.hosts[leader].attach_feed(GID, lambda: b"|".join(state))

    consumer = consume_into(feed, state)
    lagging = next(n for n in (1, 2, 3) if n != leader)
    others = [n for n in (1, 2, 3) if n not in (leader, lagging)]
    session = Session()
    try:
        # act: cut one follower off, commit (and snapshot) without it, then heal
        async with asyncio.timeout(20):
            for node_id in (leader, *others):
                cluster.faults.cut(lagging, node_id)
            for i in range(20):
                await cluster.hosts[leader].propose(GID, session, b"c%d" % i)
            cluster.faults.heal_all()
            last = cluster.hosts[leader].groups[GID].raw.last_index()
            await until(lambda: cluster.hosts[lagging].groups[GID].applied >= last)
    finally:
        consumer.cancel()

    # check: the lagging member acknowledged its catch-up, and only after writing it
    assert recorder.append_acks.get(lagging, 0) >= 1
    assert recorder.commits_with(lagging, OP_INSTALL_SNAPSHOT) >= 1, "it caught up by appends"
    assert not recorder.breaches, recorder.report()
