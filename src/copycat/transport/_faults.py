"""Fault hooks: drop, delay or cut the link between two node ids at run time.

What lives here: `FaultHooks`, a small rule table that endpoints consult on every
send and receive while any rule is set (one attribute check otherwise). One instance
may be shared by every endpoint of an in-process test cluster; a multi-process chaos
test sets rules in each process through its own control channel.

What must not: sockets or asyncio; rules are plain data, applied by the endpoint.
"""

from __future__ import annotations

import random
from typing import final


@final
class FaultHooks:
    """Rules that make links between nodes misbehave, for tests.

    * `cut(a, b)`: nothing flows between `a` and `b`, either way (frames are dropped on
      send and on receive; requests and snapshots fail at once with
      `PeerUnreachableError` / `SnapshotStreamError`). `heal(a, b)` undoes it.
    * `drop(a, b, probability)`: raft messages from `a` to `b` are dropped with that
      probability (0 removes the rule).
    * `delay(a, b, seconds)`: raft messages from `a` to `b` are held back that long,
      keeping their order (0 removes the rule).
    * `heal_all()` removes every rule.
    * `redirect(b, host, port)`: this endpoint dials node `b` at `host:port` instead of
      the address it was given (a WAN emulator's link from this node to `b`, see
      `copycat.testing.wan`); `redirect(b, None)` undoes it. Not touched by
      `heal_all()`, and costs nothing on the send path.

    Dropped and cut messages are counted (`messages_dropped_fault`) but not reported
    unreachable: they model a lossy network, which raft must survive on its own.
    """

    __slots__ = ("_cuts", "_delays", "_drops", "_random", "_redirects", "active")

    def __init__(self, *, seed: int | None = None) -> None:
        self._cuts: set[frozenset[int]] = set()
        self._drops: dict[tuple[int, int], float] = {}
        self._delays: dict[tuple[int, int], float] = {}
        self._random = random.Random(seed)
        self._redirects: dict[int, tuple[str, int]] = {}
        self.active = False
        """Whether any rule is set; endpoints skip every check when False."""

    def _update(self) -> None:
        self.active = bool(self._cuts or self._drops or self._delays)

    def cut(self, a: int, b: int) -> None:
        """Cut the link between nodes `a` and `b`, both directions."""
        if a == b:
            raise ValueError("a node has no link to itself")
        self._cuts.add(frozenset((a, b)))
        self._update()

    def heal(self, a: int, b: int) -> None:
        """Undo `cut(a, b)` and remove drop and delay rules between them, both ways."""
        self._cuts.discard(frozenset((a, b)))
        for key in ((a, b), (b, a)):
            self._drops.pop(key, None)
            self._delays.pop(key, None)
        self._update()

    def heal_all(self) -> None:
        self._cuts.clear()
        self._drops.clear()
        self._delays.clear()
        self._update()

    def drop(self, a: int, b: int, probability: float = 1.0) -> None:
        """Drop raft messages from `a` to `b` with `probability` (0 to 1)."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be in 0..1")
        if probability == 0.0:
            self._drops.pop((a, b), None)
        else:
            self._drops[(a, b)] = probability
        self._update()

    def delay(self, a: int, b: int, seconds: float) -> None:
        """Hold raft messages from `a` to `b` back for `seconds` (order kept)."""
        if not seconds >= 0.0:
            raise ValueError("seconds must not be negative")
        if seconds == 0.0:
            self._delays.pop((a, b), None)
        else:
            self._delays[(a, b)] = seconds
        self._update()

    def is_cut(self, a: int, b: int) -> bool:
        return frozenset((a, b)) in self._cuts

    def should_drop(self, a: int, b: int) -> bool:
        """Whether one message from `a` to `b` is lost (cut, or drawn by a drop rule)."""
        if frozenset((a, b)) in self._cuts:
            return True
        p = self._drops.get((a, b))
        return p is not None and self._random.random() < p

    def delay_s(self, a: int, b: int) -> float:
        return self._delays.get((a, b), 0.0)

    def redirect(self, b: int, host: str | None, port: int = 0) -> None:
        """Dial node `b` at `host:port` from now on (connections already up stay);
        `host=None` dials the given address again."""
        if host is None:
            self._redirects.pop(b, None)
        elif not 0 < port < 65536:
            raise ValueError("port must be in 1..65535")
        else:
            self._redirects[b] = (host, port)

    def dial_address(self, b: int, address: tuple[str, int]) -> tuple[str, int]:
        """Where to dial node `b`, given the address the endpoint knows for it."""
        return self._redirects.get(b, address)
