# Data structure ids: `DataStructureId` and `new_data_structure_id()`.
#
# What lives here: the immutable id value type, built on python-ulid (a maintained,
# typed ULID implementation for parsing and formatting),
# its string and integer forms, and the parse errors (`InvalidIdError`). Generation is
# ours (`_Generator`, a few lines): python-ulid samples the clock outside its lock, so
# ids made by concurrent threads can go backwards; one process's ids must not.
#
# What must not: I/O, node state, or any knowledge of how the host stores groups beyond
# "the group id is the id's 128-bit integer".
"""Ids of replicated data structures: ULIDs, sortable by creation time, that round-trip
through their 26-character string form and map one to one onto raft group ids."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Final, final

from ulid import ULID

from copycat.errors import InvalidIdError

if TYPE_CHECKING:
    from datetime import datetime

__all__: Final = ["DataStructureId", "group_name", "new_data_structure_id"]

ID_TEXT_LENGTH: Final = 26
"""Characters in the string form of an id (a ULID in Crockford base32)."""

MAX_GROUP_ID: Final = (1 << 128) - 1
"""The largest integer form of an id: ids are unsigned 128-bit integers."""

_RANDOM_BITS: Final = 80


class _Generator:
    """Strictly increasing ULIDs for this process: the clock is read under the lock, and
    a fresh id that would not sort after the previous one (same millisecond, or a clock
    that stepped back) is the previous one plus one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> ULID:
        with self._lock:
            now = time.time_ns() // 1_000_000
            value = (now << _RANDOM_BITS) | int.from_bytes(os.urandom(10), "big")
            if value <= self._last:
                value = self._last + 1
            self._last = value
        return ULID.from_int(value)


_generator: Final = _Generator()


@final
class DataStructureId:
    """The id of a replicated data structure: a ULID (48 bits of creation time in
    milliseconds, then 80 random bits).

    * `str(id)` is the canonical 26-character form (upper case); `DataStructureId.parse`
      reads it back (either case), so `parse(str(id)) == id`.
    * `int(id)` and `id.group_id` are the unsigned 128-bit integer the host uses as the
      raft group id; `DataStructureId.from_int` reads it back.
    * Ids are immutable, hashable and ordered: by creation time first, and ids made by
      one process within one millisecond in the order they were made.
    * An id equals only another `DataStructureId` with the same value, never its string.

    Make ids with `DataStructureId.new()` (or `new_data_structure_id()`); the
    constructor is not public.
    """

    __slots__ = ("_ulid",)

    _ulid: ULID

    def __init__(self, ulid: ULID, /) -> None:
        object.__setattr__(self, "_ulid", ulid)

    @classmethod
    def new(cls) -> DataStructureId:
        """A fresh id, stamped with the current time. Thread-safe; ids made by one process
        are strictly increasing, from any number of threads."""
        return cls(_generator.next())

    @classmethod
    def parse(cls, text: str | DataStructureId) -> DataStructureId:
        """The id whose string form is `text` (26 characters of Crockford base32, either
        case). An id is returned as it is, so `parse` accepts "an id or its string".

        Raises `InvalidIdError` (a `ValueError`) naming the text and what is wrong.
        """
        if isinstance(text, DataStructureId):
            return text
        if not isinstance(text, str):
            raise InvalidIdError(text, f"expected a str, got {type(text).__name__}")
        if len(text) != ID_TEXT_LENGTH:
            raise InvalidIdError(text, f"expected {ID_TEXT_LENGTH} characters, got {len(text)}")
        try:
            ulid = ULID.from_str(text)
        except ValueError as exc:
            raise InvalidIdError(text, str(exc)) from None
        return cls(ulid)

    @classmethod
    def from_int(cls, value: int) -> DataStructureId:
        """The id whose integer form (`int(id)`, the raft group id) is `value`.

        Raises `InvalidIdError` when `value` is not an integer from 0 to 2**128 - 1.
        """
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidIdError(value, f"expected an int, got {type(value).__name__}")
        if not 0 <= value <= MAX_GROUP_ID:
            raise InvalidIdError(value, "expected an integer from 0 to 2**128 - 1")
        return cls(ULID.from_int(value))

    @property
    def group_id(self) -> int:
        """The unsigned 128-bit integer the host uses as this data structure's raft group
        id (the same as `int(id)`)."""
        return int(self._ulid)

    @property
    def created_at_ms(self) -> int:
        """When the id was made, in milliseconds since the Unix epoch (its first 48 bits)."""
        return self._ulid.milliseconds

    @property
    def created_at(self) -> datetime:
        """When the id was made, to the millisecond, in UTC. Raises ValueError for an id
        stamped after the year 9999, which only a made-up integer form can be."""
        return self._ulid.datetime

    def __str__(self) -> str:
        return str(self._ulid)

    def __int__(self) -> int:
        return int(self._ulid)

    def __repr__(self) -> str:
        return f"DataStructureId({str(self._ulid)!r})"

    def __hash__(self) -> int:
        return hash(self._ulid.bytes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataStructureId):
            return NotImplemented
        return self._ulid.bytes == other._ulid.bytes

    def __lt__(self, other: DataStructureId) -> bool:
        if not isinstance(other, DataStructureId):
            return NotImplemented
        return self._ulid.bytes < other._ulid.bytes

    def __le__(self, other: DataStructureId) -> bool:
        if not isinstance(other, DataStructureId):
            return NotImplemented
        return self._ulid.bytes <= other._ulid.bytes

    def __gt__(self, other: DataStructureId) -> bool:
        if not isinstance(other, DataStructureId):
            return NotImplemented
        return self._ulid.bytes > other._ulid.bytes

    def __ge__(self, other: DataStructureId) -> bool:
        if not isinstance(other, DataStructureId):
            return NotImplemented
        return self._ulid.bytes >= other._ulid.bytes

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"DataStructureId is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"DataStructureId is immutable (cannot delete {name!r})")

    def __reduce__(self) -> tuple[object, tuple[int]]:
        # Pickle and copy by the integer form: the slot cannot be set by the default
        # protocol, since __setattr__ refuses.
        return (DataStructureId.from_int, (int(self._ulid),))


def new_data_structure_id() -> DataStructureId:
    """A fresh data structure id (see `DataStructureId.new`)."""
    return DataStructureId.new()


def group_name(gid: int) -> str:
    """A raft group as log lines and errors name it: the data structure id the program
    knows, beside the raft group id (the same 128 bits as an integer)."""
    if isinstance(gid, int) and not isinstance(gid, bool) and 0 <= gid <= MAX_GROUP_ID:
        return f"{DataStructureId.from_int(gid)} (group {gid})"
    return f"group {gid!r}"
