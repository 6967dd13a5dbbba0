"""Tombstones: the groups this node hosted once and must never create again.

What lives here: `Tombstones`, a small durable set of group ids kept in the data dir.
A node that dropped its replica of a group (it was removed, or handed it over) and later
sees nobody hosting the group's id must not start a fresh group under that id: the old
group may live on out of sight (a partition, nodes down), and two groups under one id
would diverge for good. Each tombstone also keeps what the deleted member was (`Retired`:
its term, its vote, its last entry), which a member of the same group opened here again
must recall (`RawNode.recall`): the group counted the deleted member's vote and its
acknowledgements, and a member under the same node id that forgot them could vote a
stale candidate in (sim seed 11). Beside it, `KnownNodes`: the durable set of nodes this
node has seen, the quorum of group creation. What must not: anything about raft or the
log store.

Format: one group id a line, as 32 hex digits, then (when known) the term, the vote, and
the last entry's term and index in decimal, appended with a flush and an fsync (a torn
or unreadable line is ignored when read, with a log line). Written by hand rather than through the log store:
the store deletes everything of a group when it is dropped, and this record must
outlive exactly that.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

log = logging.getLogger("copycat.host")


@final
@dataclass(frozen=True, slots=True)
class Retired:
    """A deleted member's raft state: what a later member under the same id recalls."""

    term: int
    vote: int
    last_log_term: int
    last_log_index: int

    def merge(self, other: Retired | None) -> Retired:
        """The later of two retirements, with the more up-to-date last entry of both."""
        if other is None:
            return self
        later = self if (self.term, self.vote) >= (other.term, other.vote) else other
        last = max(
            (self.last_log_term, self.last_log_index), (other.last_log_term, other.last_log_index)
        )
        return Retired(later.term, later.vote, last[0], last[1])


@final
class Tombstones:
    """The durable set of group ids this node must never create again, each with what
    its deleted member was (`retired`)."""

    __slots__ = ("_ids", "_path", "_retired")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._ids: set[int] = set()
        self._retired: dict[int, Retired] = {}
        for number, line in enumerate(read_lines(path), 1):
            fields = line.split()
            if not fields:
                continue
            try:
                gid = int(fields[0], 16)
                numbers = [int(f) for f in fields[1:]]
            except ValueError:
                log.warning("%s: line %d is not a tombstone; ignored", path, number)
                continue
            if len(numbers) not in (0, 4) or min(numbers, default=0) < 0:
                log.warning("%s: line %d is not a tombstone; ignored", path, number)
                continue
            self._ids.add(gid)
            if numbers:
                self._retired[gid] = Retired(*numbers).merge(self._retired.get(gid))

    def __contains__(self, gid: object) -> bool:
        return gid in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def retired(self, gid: int) -> Retired | None:
        """What this node's deleted member of `gid` was, when one was deleted."""
        return self._retired.get(gid)

    def add(self, gid: int, retired: Retired | None = None) -> None:
        """Record `gid` durably, with what its member was (`retired`) when known."""
        if retired is not None:
            retired = retired.merge(self._retired.get(gid))
            if retired == self._retired.get(gid):
                return
        elif gid in self._ids:
            return
        line = f"{gid:032x}"
        if retired is not None:
            r = retired
            line += f" {r.term} {r.vote} {r.last_log_term} {r.last_log_index}"
        append_line(self._path, line)
        self._ids.add(gid)
        if retired is not None:
            self._retired[gid] = retired


def read_lines(path: Path) -> list[str]:
    """The complete lines of a file written by `append_line` (none when it is missing):
    a last line without its newline was torn by a crash and is left out, logged."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    if lines[-1]:
        log.warning("%s: the last line is incomplete; ignored", path)
    return lines[:-1]


def append_line(path: Path, line: str) -> None:
    """Append `line` to `path` durably: flushed and fsynced, and the file's directory
    entry too when the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    if new_file:  # the file's directory entry must survive a crash too
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@final
class KnownNodes:
    """The durable set of nodes this node has seen live, less those that left on purpose:
    the quorum it must hear from before it decides that nobody hosts an id. Durable
    because a node restarted inside a partition sees only its own side, which it would
    take for the whole cluster (sim seed 63: a second group under one id). Format: one
    line per change, `+` or `-` and the node id in decimal, appended like `Tombstones`."""

    __slots__ = ("_ids", "_path")

    def __init__(self, path: Path, node_id: int) -> None:
        self._path = path
        self._ids: set[int] = set()
        for number, line in enumerate(read_lines(path), 1):
            text = line.strip()
            if not text:
                continue
            try:
                sign, value = text[0], int(text[1:])
            except ValueError:
                sign, value = "?", 0
            if sign == "+":
                self._ids.add(value)
            elif sign == "-":
                self._ids.discard(value)
            else:
                log.warning("%s: line %d is not a known node; ignored", path, number)
        self.add(node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._ids))

    def add(self, node_id: int) -> None:
        if node_id not in self._ids:
            append_line(self._path, f"+{node_id}")
            self._ids.add(node_id)

    def discard(self, node_id: int) -> None:
        if node_id in self._ids:
            append_line(self._path, f"-{node_id}")
            self._ids.discard(node_id)
