# The replicated hashmap of `copycat demo`: a str -> str map changed only by committed
# commands ("put", "delete") and restored from its own snapshots.
#
# What lives here: the command encoding, `apply`, `snapshot`/`restore` and a content
# digest that two processes compare. What must not: CopyCat nodes, asyncio or I/O. The
# map is pure data so the demo driver can compute the expected contents with the very
# same code the nodes run.
"""The demo's replicated hashmap: put/delete commands applied from commits."""

from __future__ import annotations

import hashlib
import json
from typing import Final, final

__all__: Final = ["HashMap", "delete_command", "put_command"]

SNAPSHOT_FORMAT: Final = 1
"""Version of the snapshot bytes; `restore` refuses any other."""


def put_command(key: str, value: str) -> bytes:
    """The proposal that sets `key` to `value`."""
    return json.dumps({"op": "put", "key": key, "value": value}, separators=(",", ":")).encode()


def delete_command(key: str) -> bytes:
    """The proposal that removes `key` (a no-op when it is absent)."""
    return json.dumps({"op": "delete", "key": key}, separators=(",", ":")).encode()


@final
class HashMap:
    """A map from str to str, replicated by applying the same commands in the same order
    on every subscriber. Reads are local (and may lag the writer until it catches up)."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[str, str] = {}

    def apply(self, command: bytes) -> None:
        """Apply one committed command. Raises ValueError, with the map unchanged, for
        bytes that are not a command of this module."""
        try:
            decoded: object = json.loads(command)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a hashmap command: {exc}") from None
        if not isinstance(decoded, dict):
            raise ValueError("not a hashmap command: expected a JSON object")
        op, key = decoded.get("op"), decoded.get("key")
        if not isinstance(key, str):
            raise ValueError("not a hashmap command: 'key' must be a string")
        if op == "put":
            value = decoded.get("value")
            if not isinstance(value, str):
                raise ValueError("not a hashmap command: 'value' must be a string")
            self._data[key] = value
        elif op == "delete":
            self._data.pop(key, None)
        else:
            raise ValueError(f"not a hashmap command: unknown op {op!r}")

    def get(self, key: str) -> str | None:
        """The value of `key` in this replica, or None."""
        return self._data.get(key)

    def __len__(self) -> int:
        return len(self._data)

    def snapshot(self) -> bytes:
        """The whole map as bytes (the subscription's snapshot provider)."""
        return json.dumps(
            {"format": SNAPSHOT_FORMAT, "data": self._data}, separators=(",", ":"), sort_keys=True
        ).encode()

    def restore(self, snapshot: bytes) -> None:
        """Replace the contents with those of `snapshot` (bytes from `snapshot()`). Raises
        ValueError, with the map unchanged, for anything else."""
        try:
            decoded: object = json.loads(snapshot) if snapshot else {"format": 1, "data": {}}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a hashmap snapshot: {exc}") from None
        if not isinstance(decoded, dict) or decoded.get("format") != SNAPSHOT_FORMAT:
            raise ValueError("not a hashmap snapshot (or another format version)")
        data = decoded.get("data")
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValueError("not a hashmap snapshot: 'data' must map strings to strings")
        self._data = {str(k): str(v) for k, v in data.items()}

    def digest(self) -> str:
        """A short hash of the contents: equal maps have equal digests."""
        canonical = json.dumps(self._data, separators=(",", ":"), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]
