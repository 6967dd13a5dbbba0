# The snapshot vocabulary shared by the host, the node and the thread facade:
# `SnapshotProvider`, `LoadSnapshot` and its one value `LOAD_SNAPSHOT`.
#
# What lives here: the provider's type and the marker a commit stream yields when its
# subscriber must reload its state. A leaf, like `_ids.py` and `errors.py`: it imports
# nothing from CopyCat's layers, so each of them (and the public `copycat`) may import it.
#
# What must not: snapshot payloads, files or shipping (those are the host's and the
# storage's), or any I/O.
"""What a subscriber's snapshot provider is, and the marker that says to reload state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, final

__all__: Final = ["LOAD_SNAPSHOT", "LoadSnapshot", "SnapshotProvider"]

SnapshotProvider = Callable[[], "bytes | Awaitable[bytes]"]
"""Makes the bytes of the subscriber's state, synchronously or as an awaitable."""


@final
class LoadSnapshot:
    """The type of `LOAD_SNAPSHOT`: the subscriber must reload its state."""

    _instance: LoadSnapshot | None = None

    def __new__(cls) -> LoadSnapshot:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "LOAD_SNAPSHOT"


LOAD_SNAPSHOT: Final = LoadSnapshot()
"""Yielded by a commit stream when the subscriber must reload its state (`load_snapshot()`)."""
