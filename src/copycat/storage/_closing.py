# `ClosesOnExit`: the context-manager half of everything in storage that is closed
# once (log stores, snapshot readers): `with x:` hands back `x` and closes it at the end.
#
# What lives here: only that mixin. What must not: any state; subclasses own `close()`.
"""A mixin that closes an object when its `with` block ends."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType


class ClosesOnExit(ABC):
    """`__enter__` returns the object itself; `__exit__` calls `close()`, whether or
    not the block raised."""

    __slots__ = ()

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
