"""Tombstones: the groups this node hosted once and must never create again.

What lives here: `Tombstones`, a small durable set of group ids kept in the data dir.
A node that dropped its replica of a group (it was removed, or handed it over) and later
sees nobody hosting the group's id must not start a fresh group under that id: the old
group may live on out of sight (a partition, nodes down), and two groups under one id
would diverge for good. What must not: anything about raft or the log store.

Format: one group id a line, as 32 hex digits, appended with a flush and an fsync (a
torn last line is ignored when read). Written by hand rather than through the log store:
the store deletes everything of a group when it is dropped, and this record must
outlive exactly that.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger("copycat.host")


@final
class Tombstones:
    """The durable set of group ids this node must never create again."""

    __slots__ = ("_ids", "_path")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._ids: set[int] = set()
        if path.exists():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                text = line.strip()
                if not text:
                    continue
                try:
                    self._ids.add(int(text, 16))
                except ValueError:
                    log.warning("%s: line %d is not a group id; ignored", path, number)

    def __contains__(self, gid: object) -> bool:
        return gid in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, gid: int) -> None:
        """Record `gid` durably (once)."""
        if gid in self._ids:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self._path.exists()
        with self._path.open("a") as f:
            f.write(f"{gid:032x}\n")
            f.flush()
            os.fsync(f.fileno())
        if new_file:  # the file's directory entry must survive a crash too
            fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._ids.add(gid)
