# The async interface the thread facade drives: `AsyncNode` and `AsyncSubscription`.
#
# What lives here: Protocols only (the shape of `copycat.CopyCat` and
# `copycat.Subscription` as the facade uses them), and the `NodeFactory` alias.
#
# What must not: implementations, threads, or imports of the node itself (the facade
# must work against any object of this shape, in particular the fakes of the tests);
# the value types its queries return are imported for type checking only.
"""The asynchronous node and subscription that `copycat.sync` wraps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from copycat._config import Config
    from copycat._ids import DataStructureId
    from copycat._node import GroupInfo
    from copycat._snapshot import LoadSnapshot, SnapshotProvider
    from copycat.errors import CopyCatError
    from copycat.host import RecoveryReport
    from copycat.membership import MemberInfo


class AsyncSubscription(Protocol):
    """What `copycat.sync.Subscription` needs of an asyncio subscription (the shape of
    `copycat.Subscription`)."""

    @property
    def data_structure_id(self) -> DataStructureId:
        """The id of the data structure subscribed to."""
        ...

    async def propose(self, data: bytes) -> int:
        """Return once `data` is committed, with its position, or raise a typed error."""
        ...

    async def read_barrier(self, *, timeout_s: float | None = None) -> int:
        """Return once `commits()` delivered everything committed before the call, with
        the position it waited for."""
        ...

    async def wait_delivered(self, position: int, *, timeout_s: float | None = None) -> None:
        """Return once `commits()` delivered `position`."""
        ...

    @property
    def position(self) -> int:
        """The position of the item `commits()` handed out last (0 before the first)."""
        ...

    def commits(self) -> AsyncIterator[bytes | LoadSnapshot]:
        """Every committed proposal, in order, exactly once; `LOAD_SNAPSHOT` when the
        subscriber must reload its state. The snapshot provider is called only from
        inside this iterator's `__anext__`, at the position of the items yielded so
        far."""
        ...

    def errors(self) -> AsyncIterator[CopyCatError]:
        """Errors of the subscription that no `propose` call reports."""
        ...

    async def load_snapshot(self) -> bytes:
        """The user's bytes of the snapshot announced by the last `LOAD_SNAPSHOT`."""
        ...

    async def close(self) -> None:
        """Leave the data structure's group; the iterators end."""
        ...


class AsyncNode(Protocol):
    """What `copycat.sync.CopyCat` needs of an asyncio node (the shape of
    `copycat.CopyCat`).

    The queries (`node_id`, `address`, `name`, `gossip_address`, `members()`, `groups()`,
    `counters()`, `http_address`, `metrics()`, `status()`, `readiness()`,
    `metric_counters()`) are plain reads: the facade calls them on the loop thread only,
    after `start()` returned, and they must not block.

    The snapshot provider given to `subscribe` may return bytes or an awaitable of
    bytes (`SnapshotProvider`): the facade passes an async one, which runs
    the user's provider in the thread that reads the commits (see `copycat.sync`).
    """

    async def start(self) -> None:
        """Start the node (bind, join the cluster, open storage)."""
        ...

    async def shutdown(self) -> None:
        """Stop the node and release everything it holds."""
        ...

    async def leave(self, timeout_s: float | None = None) -> None:
        """Hand the node's replicas over to other nodes, then shut down."""
        ...

    @property
    def node_id(self) -> int:
        """This node's id (0 until started)."""
        ...

    @property
    def address(self) -> str:
        """The transport address published to the other nodes, "host:port"."""
        ...

    @property
    def name(self) -> str:
        """The node's name for people (`Config.node_name`, else its address)."""
        ...

    @property
    def gossip_address(self) -> str:
        """The gossip address another node lists in `peers_to_contact`, "host:port"."""
        ...

    def members(self) -> tuple[MemberInfo, ...]:
        """The live members of the cluster as this node sees them, itself included."""
        ...

    def groups(self) -> tuple[GroupInfo, ...]:
        """The raft groups this node hosts a member of, sorted by group id."""
        ...

    def counters(self) -> dict[str, int]:
        """The node's counters."""
        ...

    @property
    def http_address(self) -> str | None:
        """The HTTP endpoint's "host:port", or None when it is off."""
        ...

    def metrics(self) -> bytes:
        """Every metric in the Prometheus text format."""
        ...

    def status(self, *, max_groups: int | None = None) -> dict[str, Any]:
        """The node, its members and (at most `max_groups` of) its groups as plain data."""
        ...

    def readiness(self) -> list[str]:
        """Why the node is not ready to serve its subscribers (empty: ready)."""
        ...

    def metric_counters(self) -> dict[str, dict[str, int]]:
        """The counters behind the metrics, by layer."""
        ...

    def new_data_structure_id(self) -> DataStructureId:
        """A fresh data structure id."""
        ...

    async def allocate_data_structure(self, *, replicas: int | None = None) -> DataStructureId:
        """Start a new group of detached replicas and return its id."""
        ...

    async def recover(
        self, data_structure_id: DataStructureId | str, *, dry_run: bool = False
    ) -> RecoveryReport:
        """Rebuild a group from this node's member when its voters' majority is gone."""
        ...

    async def subscribe(
        self,
        data_structure_id: DataStructureId | str,
        snapshot_provider: SnapshotProvider,
    ) -> AsyncSubscription:
        """Join (or create) the data structure's group with a member on this node."""
        ...


NodeFactory: TypeAlias = "Callable[[Config], AsyncNode]"
"""Makes the async node from the config; called on the facade's event loop thread."""
