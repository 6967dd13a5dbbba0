# The raft core's view of a group's stored log (`copycat.raft.LogReader` over a
# `GroupLog`): what the host's members run on, and what the forced configuration's
# replay (`_force.py`) extends.
#
# What must not: I/O of its own (it reads through the `GroupLog`), or host state.
"""`MetadataOnlyLog`: a group's stored log as the raft core reads it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from copycat.raft import Snapshot

if TYPE_CHECKING:
    from copycat.raft import ConfState, Entry, HardState
    from copycat.storage import GroupLog


class MetadataOnlyLog:
    """The raft core's view of a group's stored log: snapshot data stays in its file
    (it is streamed when shipped), so `snapshot()` carries metadata only."""

    __slots__ = ("_log",)

    def __init__(self, group_log: GroupLog) -> None:
        self._log = group_log

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._log.initial_state()

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self._log.entries(lo, hi, max_bytes)

    def term(self, index: int) -> int:
        return self._log.term(index)

    def first_index(self) -> int:
        return self._log.first_index()

    def last_index(self) -> int:
        return self._log.last_index()

    def snapshot(self) -> Snapshot:
        return Snapshot(metadata=self._log.snapshot_metadata())
