# The in-memory log store: for tests, simulations and nodes run with durable=False
# that want no disk at all.
#
# What lives here: `MemoryLogStore`, which keeps each group's entries in a list and
# every other piece of state in the shared caches of `StoreBase`.
#
# What must not: I/O, or rules of its own: every rule lives in `_engine.py` so that
# both backends behave the same, which the tests check against `MemoryLog`.
"""In-memory backend of the log store."""

from __future__ import annotations

from typing import Final, cast, final

from copycat.errors import CorruptLogError
from copycat.raft import Entry, limit_size
from copycat.storage._engine import (
    P_DELETE_GROUP,
    P_DELETE_RANGE,
    P_PUT,
    GroupState,
    Step,
    StoreBase,
)
from copycat.storage._snapshots import DEFAULT_SNAPSHOTS_KEPT, MemorySnapshots


@final
class _Log:
    """Entries `base .. base + len(entries) - 1` of one group."""

    __slots__ = ("base", "entries")

    def __init__(self, base: int) -> None:
        self.base = base
        self.entries: list[Entry] = []


@final
class MemoryLogStore(StoreBase):
    """A `LogStore` held in memory: same rules and API as `LmdbLogStore`, no disk.

    `snapshots_kept`: snapshots kept per group (default 2, at least 1).
    """

    _EMPTY: Final = _Log(0)

    def __init__(self, *, snapshots_kept: int = DEFAULT_SNAPSHOTS_KEPT) -> None:
        snapshots = MemorySnapshots(keep=snapshots_kept)
        super().__init__(snapshots)
        snapshots.protector = self._current_snapshot
        self._logs: dict[int, _Log] = {}

    def __repr__(self) -> str:
        return f"<MemoryLogStore of {len(self._logs)} logs>"

    def sync(self) -> None:
        """Nothing to flush."""

    def _close_backend(self) -> None:
        self._logs.clear()

    def _read_entries(
        self, state: GroupState, lo: int, hi: int, max_bytes: int | None
    ) -> list[Entry]:
        log = self._logs.get(state.group, self._EMPTY)
        found = log.entries[lo - log.base : hi - log.base]
        if len(found) != hi - lo or (found and found[0].index != lo):
            raise CorruptLogError(state.group, lo, "entries are missing from the memory log")
        return limit_size(found, max_bytes)

    def _read_term(self, state: GroupState, index: int) -> int:
        log = self._logs.get(state.group, self._EMPTY)
        position = index - log.base
        if not 0 <= position < len(log.entries):
            raise CorruptLogError(state.group, index, "entry is missing from the memory log")
        return log.entries[position].term

    def _apply(self, plan: list[Step]) -> None:
        # Planning validated every step, so nothing below can fail half way.
        logs = self._logs
        for step in plan:
            kind = step[0]
            gid = step[1].group
            if kind == P_PUT:
                entries = cast("list[Entry] | tuple[Entry, ...]", step[2])
                log = logs.get(gid)
                if log is None:
                    log = logs[gid] = _Log(entries[0].index)
                elif not log.entries:
                    log.base = entries[0].index
                log.entries.extend(entries)
            elif kind == P_DELETE_RANGE:
                lo = cast("int", step[2])
                hi = cast("int", step[3])
                log = logs.get(gid)
                if log is None:
                    continue
                if lo <= log.base:
                    del log.entries[: hi - log.base + 1]
                    log.base = hi + 1
                else:
                    del log.entries[lo - log.base : hi - log.base + 1]
            elif kind == P_DELETE_GROUP:
                logs.pop(gid, None)
