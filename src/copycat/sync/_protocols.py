# The async interface the thread facade drives: `AsyncNode` and `AsyncSubscription`.
#
# What lives here: Protocols only (the shape of `copycat.CopyCat` and
# `copycat.Subscription` as the facade uses them), and the `NodeFactory` alias.
#
# What must not: implementations, threads, or imports of the node itself (the facade
# must work against any object of this shape, in particular the fakes of the tests).
"""The asynchronous node and subscription that `copycat.sync` wraps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from copycat._config import Config
    from copycat._ids import DataStructureId
    from copycat._snapshot import LoadSnapshot, SnapshotProvider
    from copycat.errors import CopyCatError


class AsyncSubscription(Protocol):
    """What `copycat.sync.Subscription` needs of an asyncio subscription (the shape of
    `copycat.Subscription`)."""

    @property
    def data_structure_id(self) -> DataStructureId:
        """The id of the data structure subscribed to."""
        ...

    async def propose(self, data: bytes) -> None:
        """Return once `data` is committed, or raise a typed error."""
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

    def new_data_structure_id(self) -> DataStructureId:
        """A fresh data structure id."""
        ...

    async def allocate_data_structure(self, *, replicas: int | None = None) -> DataStructureId:
        """Start a new group of detached replicas and return its id."""
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
