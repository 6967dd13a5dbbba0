# The directory's data structures: entries, digests, this node's versioned change log, and
# the replica of a peer's directory.
#
# What lives here: pure, deterministic code (dicts, a deque, blake2b). Every operation is
# proportional to the change it makes, except snapshots and `recompute_digest`.
#
# What must not: asyncio, sockets, clocks, kinship, msgpack (the wire codec is `_wire.py`),
# or anything that logs. Errors from remote data are raised as `DirectoryMismatchError` and
# handled by the caller.
"""A node's directory: the versioned set of (data structure id, group, replica, role)."""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

DIGEST_BITS: Final = 128
_DIGEST_MOD: Final = 1 << DIGEST_BITS
MAX_ID: Final = (1 << 63) - 1
MAX_DATA_STRUCTURE_ID_BYTES: Final = 128


class Role(enum.IntEnum):
    """A replica's role in its raft group. The values are on the wire: append only."""

    VOTER = 0
    """Votes and counts towards the commit quorum."""
    LEARNER = 1
    """Receives the log but does not vote (catching up, or a read replica)."""
    INTERACTIVE = 2
    """A member that serves a subscriber on this node (propose, commits)."""


EntryKey: TypeAlias = tuple[str, int, int]
"""(data structure id, raft group id, replica id): what identifies a directory entry."""

Change: TypeAlias = tuple[EntryKey, Role | None]
"""One entry change: the entry's new role, or None when the entry was removed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryEntry:
    """One replica this node hosts: of data structure `data_structure_id`, whose raft group
    is `group_id`, the member `replica_id` with role `role`."""

    data_structure_id: str
    """The data structure's id in its string form (a ULID), 1 to 128 UTF-8 bytes."""
    group_id: int
    """The raft group replicating the data structure: a positive integer."""
    replica_id: int
    """The member's id inside the raft group: a positive integer."""
    role: Role
    """The member's role: voter, learner or interactive."""

    def __post_init__(self) -> None:
        check_key((self.data_structure_id, self.group_id, self.replica_id))
        if not isinstance(self.role, Role):
            raise ValueError(f"role must be a Role, not {self.role!r}")

    @property
    def key(self) -> EntryKey:
        """What identifies the entry; a role change keeps the key."""
        return (self.data_structure_id, self.group_id, self.replica_id)


def check_key(key: EntryKey) -> None:
    """Raises ValueError unless `key` is a well-formed entry key."""
    ds, group, replica = key
    if not isinstance(ds, str) or not ds:
        raise ValueError("data_structure_id must be a non-empty string")
    if len(ds.encode("utf-8", "surrogatepass")) > MAX_DATA_STRUCTURE_ID_BYTES:
        raise ValueError(f"data_structure_id must be at most {MAX_DATA_STRUCTURE_ID_BYTES} bytes")
    for name, value in (("group_id", group), ("replica_id", replica)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID:
            raise ValueError(f"{name} must be an integer from 1 to 2**63 - 1")


def entry_hash(key: EntryKey, role: Role) -> int:
    """A 128-bit hash of one entry, from an unambiguous encoding of its fields."""
    ds, group, replica = key
    data = b"%d:%s|%d|%d|%d" % (len(ds), ds.encode("utf-8", "surrogatepass"), group, replica, role)
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def digest_of(entries: Mapping[EntryKey, Role]) -> int:
    """The digest of a whole set of entries: the sum of their hashes modulo 2**128.

    A sum (not a hash of a sorted list) lets the digest follow every change in O(1):
    adding an entry adds its hash, removing it subtracts it, so both sides can keep it up
    to date without re-reading the directory."""
    total = 0
    for key, role in entries.items():
        total += entry_hash(key, role)
    return total % _DIGEST_MOD


def digest_hex(digest: int) -> str:
    """The digest as 32 lowercase hex characters, its form in metadata."""
    return f"{digest:032x}"


def parse_digest_hex(text: str) -> int | None:
    """The digest from its metadata form, or None if `text` is not 32 hex characters."""
    if len(text) != DIGEST_BITS // 4 or any(ch not in "0123456789abcdef" for ch in text):
        return None
    return int(text, 16)


class DirectoryMismatchError(Exception):
    """A delta or snapshot does not fit the replica it was applied to: wrong base version,
    or a digest that differs after applying it. The replica must be pulled in full.

    `applied` lists the changes that did take effect before the mismatch was found (only a
    digest mismatch after a delta leaves any), so that indexes can follow them."""

    def __init__(self, message: str, applied: tuple[Change, ...] = ()) -> None:
        super().__init__(message)
        self.applied = applied


def _apply_change(
    entries: dict[EntryKey, Role], digest: int, key: EntryKey, role: Role | None
) -> tuple[int, bool]:
    """Applies one change to `entries`; returns the new digest and whether anything changed."""
    old = entries.get(key)
    if old == role:
        return digest, False
    if old is not None:
        digest -= entry_hash(key, old)
    if role is None:
        del entries[key]
    else:
        entries[key] = role
        digest += entry_hash(key, role)
    return digest % _DIGEST_MOD, True


@dataclass(frozen=True, slots=True, kw_only=True)
class Delta:
    """The changes that take a directory from `from_version` to `to_version`, coalesced:
    one change per key that differs, whatever happened to it in between."""

    from_version: int
    to_version: int
    changes: tuple[Change, ...]
    digest: int
    """The directory's digest at `to_version`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A whole directory at `version`."""

    version: int
    entries: tuple[tuple[EntryKey, Role], ...]
    digest: int


class DirectoryLog:
    """This node's directory and its bounded change log.

    Each `apply` that changes something raises the version by one and records the
    effective changes under it. The log keeps at most `max_history_changes` changes; older
    records are dropped from the front, and `floor` rises to the version of the newest
    dropped record. A delta can be served from any version at or above `floor`; a peer
    further behind gets a snapshot.
    """

    __slots__ = ("_digest", "_entries", "_floor", "_history_changes", "_max_history", "_records")

    def __init__(self, max_history_changes: int) -> None:
        self._entries: dict[EntryKey, Role] = {}
        self._digest = 0
        self._records: deque[tuple[int, tuple[Change, ...]]] = deque()
        self._floor = 0
        self._history_changes = 0
        self._max_history = max_history_changes

    @property
    def version(self) -> int:
        """The current version: 0 for the empty directory of a new run."""
        return self._floor + len(self._records)

    @property
    def floor(self) -> int:
        """The oldest version a delta can be served from."""
        return self._floor

    @property
    def digest(self) -> int:
        return self._digest

    @property
    def history_changes(self) -> int:
        """Changes held in the log now."""
        return self._history_changes

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Mapping[EntryKey, Role]:
        """The current entries (a live read-only view; copy it to keep it)."""
        return self._entries

    def apply(self, changes: Iterable[Change]) -> int:
        """Applies `changes` in order as one new version; returns how many took effect.

        Changes that change nothing (a removal of an absent key, an upsert to the same
        role) are skipped, and when none takes effect the version does not move. Keys are
        checked before anything changes, so a bad key leaves the directory as it was."""
        changes = list(changes)
        for key, role in changes:
            check_key(key)
            if role is not None and not isinstance(role, Role):
                raise ValueError(f"role must be a Role or None, not {role!r}")
        before: dict[EntryKey, Role | None] = {}
        for key, _ in changes:
            if key not in before:
                before[key] = self._entries.get(key)
        effective = 0
        for key, role in changes:
            self._digest, changed = _apply_change(self._entries, self._digest, key, role)
            effective += changed
        if not effective:
            return 0
        record = tuple(
            (key, self._entries.get(key))
            for key, old in before.items()
            if self._entries.get(key) != old
        )
        if not record:
            return 0  # every change was undone within the batch
        self._records.append((self.version + 1, record))
        self._history_changes += len(record)
        while self._history_changes > self._max_history and self._records:
            _, dropped = self._records.popleft()
            self._floor += 1
            self._history_changes -= len(dropped)
        return len(record)

    def delta_since(self, version: int) -> Delta | None:
        """The coalesced changes from `version` to now, or None when `version` is older
        than the log's floor or newer than the current version (a snapshot is needed)."""
        if not self._floor <= version <= self.version:
            return None
        start = version - self._floor
        merged: dict[EntryKey, Role | None] = {
            key: role
            for index in range(start, len(self._records))
            for key, role in self._records[index][1]
        }
        return Delta(
            from_version=version,
            to_version=self.version,
            changes=tuple(merged.items()),
            digest=self._digest,
        )

    def snapshot(self) -> Snapshot:
        """The whole directory at the current version."""
        return Snapshot(
            version=self.version, entries=tuple(self._entries.items()), digest=self._digest
        )

    def recompute_digest(self) -> int:
        """The digest computed from scratch (anti-entropy checks it against `digest`)."""
        return digest_of(self._entries)


class PeerDirectory:
    """This node's copy of one run of a peer's directory, at `version`.

    `apply_delta` and `replace` keep the digest up to date and check it against the one the
    peer sent; a mismatch raises `DirectoryMismatchError` and leaves the copy marked
    `needs_full` (its content is then a best guess until a snapshot replaces it)."""

    __slots__ = ("_digest", "_entries", "epoch", "needs_full", "version")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.version = 0
        self.needs_full = True
        self._entries: dict[EntryKey, Role] = {}
        self._digest = 0

    @property
    def digest(self) -> int:
        return self._digest

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[EntryKey, Role]]:
        return iter(self._entries.items())

    def entries(self) -> Mapping[EntryKey, Role]:
        return self._entries

    def apply_delta(self, delta: Delta) -> list[Change]:
        """Applies `delta`; returns the changes that took effect, for the caller's index.

        Raises DirectoryMismatchError when the delta does not start at this copy's
        version, or when the digest differs afterwards (the changes stay applied and the
        copy is marked `needs_full`)."""
        if self.needs_full or delta.from_version != self.version:
            raise DirectoryMismatchError(
                f"delta from version {delta.from_version} does not apply to version "
                f"{self.version}{' (a full pull is due)' if self.needs_full else ''}"
            )
        if delta.to_version < delta.from_version:
            raise DirectoryMismatchError("delta goes backwards")
        applied: list[Change] = []
        for key, role in delta.changes:
            self._digest, changed = _apply_change(self._entries, self._digest, key, role)
            if changed:
                applied.append((key, role))
        self.version = delta.to_version
        if self._digest != delta.digest:
            self.needs_full = True
            raise DirectoryMismatchError("digest differs after the delta", tuple(applied))
        return applied

    def replace(self, snapshot: Snapshot) -> list[Change]:
        """Replaces the whole copy with `snapshot`; returns the changes against the old
        content. Raises DirectoryMismatchError (and keeps the old content) when the
        snapshot's entries do not hash to its digest."""
        new = dict(snapshot.entries)
        if len(new) != len(snapshot.entries):
            raise DirectoryMismatchError("snapshot repeats an entry")
        digest = digest_of(new)
        if digest != snapshot.digest:
            raise DirectoryMismatchError("snapshot entries do not match its digest")
        changes: list[Change] = [(key, None) for key in self._entries if key not in new]
        changes.extend((key, role) for key, role in new.items() if self._entries.get(key) != role)
        self._entries = new
        self._digest = digest
        self.version = snapshot.version
        self.needs_full = False
        return changes

    def recompute_digest(self) -> int:
        return digest_of(self._entries)
