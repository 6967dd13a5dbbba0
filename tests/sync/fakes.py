"""An in-memory asyncio node and subscription with the shape of `copycat.sync.AsyncNode`
and `AsyncSubscription`, and knobs to make them fail, hang or stream without end.

The fake subscription behaves like the host's feed where the facade depends on it: it
yields `LOAD_SNAPSHOT` first when it starts from a snapshot, and it calls the snapshot
provider only from inside `__anext__`, at the position of the items yielded so far
(awaiting the result when the provider returns an awaitable).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from copycat import LOAD_SNAPSHOT, LoadSnapshot
from copycat._ids import DataStructureId
from copycat._node import GroupInfo
from copycat.errors import ClosedError, CopyCatError, NotEnoughNodesError
from copycat.membership import MemberInfo, MemberState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable


@dataclass
class Behaviour:
    """Knobs of the fake node and of every subscription it makes."""

    nodes: int = 3
    node_id: int = 7
    """The id the fake node takes when it starts (0 before, as the real node)."""
    start_error: BaseException | None = None
    start_hangs: bool = False
    shutdown_hangs: bool = False
    propose_error: BaseException | None = None
    propose_hangs: bool = False
    endless: bool = False
    """The commit stream yields b"1", b"2", ... without waiting for proposals."""
    start_snapshot: bytes | None = None
    """The stream starts with LOAD_SNAPSHOT carrying these bytes."""
    snapshot_every: int = 0
    """Ask the provider for a snapshot every this many items (0: never)."""
    load_snapshot_error: BaseException | None = None


class FakeSubscription:
    def __init__(
        self,
        ds_id: DataStructureId,
        provider: Callable[[], bytes | Awaitable[bytes]],
        behaviour: Behaviour,
    ) -> None:
        self.data_structure_id = ds_id
        self.provider = provider
        self.behaviour = behaviour
        self.log: list[bytes] = []
        self.changed = asyncio.Condition()
        self.error_queue: asyncio.Queue[CopyCatError | None] = asyncio.Queue()
        self.commit_error: BaseException | None = None
        self.pulled = 0
        self.snapshots: list[tuple[int, bytes]] = []
        self.cancelled_proposals = 0
        self.closed = False
        self._pending: bytes | None = None
        self.position = 0
        """The position (1-based index into `log`) of the item handed out last."""
        self.delivered = 0
        """Through which position the consumer took items and came back."""

    async def read_barrier(self, *, timeout_s: float | None = None) -> int:
        target = len(self.log)
        await self.wait_delivered(target, timeout_s=timeout_s)
        return target

    async def wait_delivered(self, position: int, *, timeout_s: float | None = None) -> None:
        if self.closed:
            raise ClosedError("closed")
        async with asyncio.timeout(30.0 if timeout_s is None else timeout_s), self.changed:
            await self.changed.wait_for(lambda: self.delivered >= position)

    async def propose(self, data: bytes) -> int:
        if self.closed:
            raise ClosedError("closed")
        if self.behaviour.propose_error is not None:
            raise self.behaviour.propose_error
        if self.behaviour.propose_hangs:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled_proposals += 1
                raise
        async with self.changed:
            self.log.append(bytes(data))
            self.changed.notify_all()
        return len(self.log)

    async def fail_commits(self, error: BaseException) -> None:
        """The commit stream raises `error` once it has yielded the whole log."""
        async with self.changed:
            self.commit_error = error
            self.changed.notify_all()

    def commits(self) -> AsyncIterator[bytes | LoadSnapshot]:
        return self._commits()

    async def _commits(self) -> AsyncIterator[bytes | LoadSnapshot]:
        if self.behaviour.start_snapshot is not None:
            self._pending = self.behaviour.start_snapshot
            yield LOAD_SNAPSHOT
        position = 0
        while True:
            every = self.behaviour.snapshot_every
            if (
                every
                and position
                and position % every == 0
                and (not self.snapshots or self.snapshots[-1][0] != position)
            ):
                produced = self.provider()
                data = await produced if inspect.isawaitable(produced) else produced
                self.snapshots.append((position, data))
            if self.behaviour.endless:
                position += 1
                self.pulled += 1
                yield str(position).encode()
                continue
            async with self.changed:
                while position >= len(self.log):
                    if self.closed:
                        return
                    if self.commit_error is not None:
                        raise self.commit_error
                    await self.changed.wait()
                item = self.log[position]
            position += 1
            self.pulled += 1
            self.position = position
            yield item
            async with self.changed:
                self.delivered = position
                self.changed.notify_all()

    def errors(self) -> AsyncIterator[CopyCatError]:
        return self._errors()

    async def _errors(self) -> AsyncIterator[CopyCatError]:
        while True:
            error = await self.error_queue.get()
            if error is None:
                return
            yield error

    async def load_snapshot(self) -> bytes:
        if self.behaviour.load_snapshot_error is not None:
            raise self.behaviour.load_snapshot_error
        data, self._pending = self._pending, None
        if data is None:
            raise ClosedError("no snapshot is pending")
        return data

    async def close(self) -> None:
        async with self.changed:
            self.closed = True
            self.changed.notify_all()
        self.error_queue.put_nowait(None)


class FakeNode:
    def __init__(self, config: object, behaviour: Behaviour) -> None:
        self.config = config
        self.behaviour = behaviour
        self.started = False
        self.shut_down = False
        self.left_with: float | None = None
        self.subscriptions: list[FakeSubscription] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.node_id = 0
        self.query_threads: set[int] = set()
        """Idents of the threads the queries were answered on."""
        self.cycles = 0

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.behaviour.start_hangs:
            await asyncio.Event().wait()
        if self.behaviour.start_error is not None:
            raise self.behaviour.start_error
        self.node_id = self.behaviour.node_id
        self.started = True

    def _queried(self) -> None:
        self.query_threads.add(threading.get_ident())

    @property
    def address(self) -> str:
        self._queried()
        return "127.0.0.1:7001"

    @property
    def name(self) -> str:
        self._queried()
        return "fake-1"

    @property
    def gossip_address(self) -> str:
        self._queried()
        return "127.0.0.1:7002"

    def members(self) -> tuple[MemberInfo, ...]:
        self._queried()
        return (
            MemberInfo(
                node_id=self.node_id,
                transport_address="127.0.0.1:7001",
                data_center="",
                rack="",
                state=MemberState.ALIVE,
                epoch=1,
                gossip_address="127.0.0.1:7002",
                directory_version=len(self.subscriptions),
            ),
        )

    def groups(self) -> tuple[GroupInfo, ...]:
        self._queried()
        return tuple(
            GroupInfo(
                data_structure_id=str(sub.data_structure_id),
                member="subscriber",
                raft_role="leader",
                leader_id=self.node_id,
                term=1,
                commit=len(sub.log),
                applied=len(sub.log),
                voters=(self.node_id,),
                learners=(),
                replicas_on=(self.node_id,),
            )
            for sub in sorted(self.subscriptions, key=lambda s: s.data_structure_id.group_id)
            if not sub.closed
        )

    def counters(self) -> dict[str, int]:
        self._queried()
        self.cycles += 1
        return {"cycles": self.cycles, "quiescent_groups": 0}

    @property
    def http_address(self) -> str | None:
        self._queried()
        return "127.0.0.1:7003"

    def metrics(self) -> bytes:
        self._queried()
        return b"copycat_fake_cycles_total 1\n"

    def status(self, *, max_groups: int | None = None) -> dict[str, Any]:
        self._queried()
        del max_groups
        return {"node": {"node_id": self.node_id}, "members": [], "groups": [], "groups_total": 0}

    def readiness(self) -> list[str]:
        self._queried()
        return [] if self.started and not self.shut_down else ["the node is not running"]

    def metric_counters(self) -> dict[str, dict[str, int]]:
        self._queried()
        return {"host": {"cycles": self.cycles}}

    async def shutdown(self) -> None:
        if self.behaviour.shutdown_hangs:
            await asyncio.Event().wait()
        for sub in self.subscriptions:
            await sub.close()
        self.shut_down = True

    async def leave(self, timeout_s: float | None = None) -> None:
        self.left_with = timeout_s
        await self.shutdown()

    def new_data_structure_id(self) -> DataStructureId:
        return DataStructureId.new()

    async def allocate_data_structure(self, *, replicas: int | None = None) -> DataStructureId:
        if replicas is not None and replicas > self.behaviour.nodes:
            raise NotEnoughNodesError(replicas, self.behaviour.nodes)
        return DataStructureId.new()

    async def subscribe(
        self,
        data_structure_id: DataStructureId | str,
        snapshot_provider: Callable[[], bytes | Awaitable[bytes]],
    ) -> FakeSubscription:
        sub = FakeSubscription(
            DataStructureId.parse(data_structure_id), snapshot_provider, self.behaviour
        )
        self.subscriptions.append(sub)
        return sub


@dataclass
class FakeFactory:
    """A `node_factory` that remembers the node it made."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    nodes: list[FakeNode] = field(default_factory=list)

    def __call__(self, config: object) -> FakeNode:
        node = FakeNode(config, self.behaviour)
        self.nodes.append(node)
        return node

    @property
    def node(self) -> FakeNode:
        return self.nodes[-1]
