# The simulator's checker, at the user's level: what every subscriber was handed.
#
# What lives here: `Recorder`, which wraps each `Subscription` a simulated program uses
# (tagging each proposal with a unique tag the program never sees, keeping the history of
# tags each subscriber consumed, carrying that history inside the subscriber's snapshots),
# and `Checker`, which judges those histories as they happen and at the end.
#
# What must not: reach into the host for the user-level verdict. Raft-level samples
# (leaders per term, committed terms) are taken by the cluster and fed in here.
"""`Recorder` (a subscription as the checker sees it) and `Checker`."""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Final

from copycat._snapshot import LOAD_SNAPSHOT
from copycat.errors import CopyCatError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from copycat import Subscription
    from copycat._snapshot import LoadSnapshot, SnapshotProvider

TAG_BYTES: Final = 12
_TAG: Final = struct.Struct(">IQ")


class Checker:
    """Every violation seen, and the facts it judges them by."""

    def __init__(self, trace: Callable[[str], None]) -> None:
        self._trace = trace
        self.violations: list[str] = []
        self.proposed: set[bytes] = set()
        self.acked: dict[str, set[bytes]] = {}
        """Per data structure: tags whose `propose` returned."""
        self.ok = 0
        """Proposals whose `propose` returned."""
        self.failed = 0
        """Proposals whose `propose` raised (each delivered at most once)."""
        self.order: dict[str, list[bytes]] = {}
        """Per data structure: the one order every subscriber's history must follow."""
        self.delivered = 0
        self.leaders: dict[tuple[int, int], int] = {}
        self.committed: dict[tuple[int, int], int] = {}

    def violation(self, text: str) -> None:
        self._trace(f"VIOLATION {text}")
        if len(self.violations) < 50:
            self.violations.append(text)

    def place(self, ds: str, who: str, position: int, tag: bytes) -> None:
        order = self.order.setdefault(ds, [])
        if tag not in self.proposed:
            self.violation(f"{who} was handed a value nobody proposed in {ds}")
        if position < len(order):
            if order[position] != tag:
                self.violation(f"{who} disagrees at position {position} of {ds}")
        elif position == len(order):
            order.append(tag)
        else:
            self.violation(f"{who} skipped positions in {ds}")

    def raft_sample(
        self, node: int, gid: int, term: int, leader: bool, commit: int, commit_term: int
    ) -> None:
        if leader:
            known = self.leaders.setdefault((gid, term), node)
            if known != node:
                self.violation(f"two leaders in term {term} of group {gid}: {known} and {node}")
        if commit > 0 and commit_term > 0:
            known_term = self.committed.setdefault((gid, commit), commit_term)
            if known_term != commit_term:
                self.violation(
                    f"entry {commit} of group {gid} committed in term {known_term} and {commit_term}"
                )


class Recorder:
    """A subscription as a simulated program uses it, recorded for the checker. It has the
    subscription's API (`propose`, `commits`, `load_snapshot`, `errors`, `close`,
    `read_barrier`, `wait_delivered`, `position`)."""

    def __init__(self, checker: Checker, who: str, ds: str, tags: Callable[[], bytes]) -> None:
        self.checker = checker
        self.who = who
        self.ds = ds
        self._tags = tags
        self.sub: Subscription | None = None
        self.history: list[bytes] = []
        self._seen: set[bytes] = set()
        self._loaded: list[bytes] | None = None
        self.closed = False
        self.stream_ended = False
        self._user_provider: SnapshotProvider | None = None

    # -- what `CopyCat.subscribe` is given ---------------------------------------------------

    def provider(self, user: SnapshotProvider) -> SnapshotProvider:
        self._user_provider = user

        def provide() -> bytes | Awaitable[bytes]:
            history = b"".join(self.history)
            made = user()
            if isinstance(made, bytes | bytearray | memoryview):
                return _pack(history, bytes(made))

            async def later() -> bytes:
                return _pack(history, bytes(await made))

            return later()

        return provide

    # -- the subscription's API ----------------------------------------------------------

    async def propose(self, data: bytes, *, wait_delivered: bool = False) -> int:
        assert self.sub is not None
        tag = self._tags()
        self.checker.proposed.add(tag)
        try:
            position = await self.sub.propose(tag + bytes(data))
        except CopyCatError:
            self.checker.failed += 1
            raise
        self.checker.acked.setdefault(self.ds, set()).add(tag)
        self.checker.ok += 1
        if wait_delivered:
            await self.sub.wait_delivered(position)
        return position

    async def read_barrier(self, *, timeout_s: float | None = None) -> int:
        assert self.sub is not None
        return await self.sub.read_barrier(timeout_s=timeout_s)

    async def wait_delivered(self, position: int, *, timeout_s: float | None = None) -> None:
        assert self.sub is not None
        await self.sub.wait_delivered(position, timeout_s=timeout_s)

    @property
    def position(self) -> int:
        assert self.sub is not None
        return self.sub.position

    def commits(self) -> AsyncIterator[bytes | LoadSnapshot]:
        assert self.sub is not None
        return self._commits(self.sub.commits())

    async def _commits(
        self, inner: AsyncIterator[bytes | LoadSnapshot]
    ) -> AsyncIterator[bytes | LoadSnapshot]:
        checker = self.checker
        async for item in inner:
            if item is LOAD_SNAPSHOT:
                self._loaded = None
                yield item
                continue
            assert isinstance(item, bytes)
            tag, data = item[:TAG_BYTES], item[TAG_BYTES:]
            if tag in self._seen:
                checker.violation(f"{self.who} was handed a value twice in {self.ds}")
            self._seen.add(tag)
            checker.place(self.ds, self.who, len(self.history), tag)
            self.history.append(tag)
            checker.delivered += 1
            yield data
        if not self.closed:
            self.stream_ended = True

    async def load_snapshot(self) -> bytes:
        assert self.sub is not None
        raw = await self.sub.load_snapshot()
        history, user = _unpack(raw)
        tags = [history[i : i + TAG_BYTES] for i in range(0, len(history), TAG_BYTES)]
        if tags[: len(self.history)] != self.history:
            self.checker.violation(
                f"{self.who} loaded a snapshot of {len(tags)} values that does not extend the "
                f"{len(self.history)} it had consumed in {self.ds}"
            )
        for position, tag in enumerate(tags):
            self.checker.place(self.ds, self.who, position, tag)
        self.history = tags
        self._seen = set(tags)
        return user

    def errors(self) -> AsyncIterator[CopyCatError]:
        assert self.sub is not None
        return self.sub.errors()

    async def close(self) -> None:
        self.closed = True
        if self.sub is not None:
            await self.sub.close()


def _pack(history: bytes, user: bytes) -> bytes:
    return len(history).to_bytes(4, "big") + history + user


def _unpack(raw: bytes) -> tuple[bytes, bytes]:
    n = int.from_bytes(raw[:4], "big")
    return raw[4 : 4 + n], raw[4 + n :]


def make_tags(node: int) -> Callable[[], bytes]:
    counter = iter(range(1, 1 << 62))
    return lambda: _TAG.pack(node, next(counter))


async def drain(recorder: Recorder, *, slow_s: float = 0.0) -> None:
    """A subscriber that keeps no state of its own: reads every commit (slowly, when
    `slow_s` is set) and loads every snapshot it is told to."""
    async for item in recorder.commits():
        if item is LOAD_SNAPSHOT:
            await recorder.load_snapshot()
        if slow_s:
            await asyncio.sleep(slow_s)
