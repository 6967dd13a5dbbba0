# What a simulated program sees: the user's own code (a data structure class and the
# actions that drive it) runs on every simulated node through these.
#
# What lives here: `SimNode` (one run of a node as a program sees it: its id, the data
# structures it subscribes to, a seeded generator, whether to keep writing, where to report
# its state) and `CheckedCopyCat` (`subscribe` handing out subscriptions the checker
# watches), and the built-in program (unique values, slow readers).
#
# What must not: change what a subscription does. A checked subscription passes every
# call through; it only tags proposals and records what was handed out.
"""`SimNode`, `CheckedCopyCat` and the built-in program `unique_values`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Protocol

from copycat.errors import CopyCatError
from copycat.testing.sim._check import Checker, Recorder, drain

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable

    from copycat._ids import DataStructureId
    from copycat._node import CopyCat
    from copycat._snapshot import SnapshotProvider


class Program(Protocol):
    """A user's program, run on every simulated node at each start: it subscribes to
    `node.data_structures` through `node.copycat` and drives them until it is told to
    stop writing (`node.writing`). A crash ends it wherever it is; a restart runs it
    again over the surviving disk."""

    def __call__(self, node: SimNode, /) -> Awaitable[None]: ...


class CheckedCopyCat:
    """The node's `CopyCat` as a simulated program uses it: `subscribe` returns a
    subscription with the same API (`propose`, `commits`, `load_snapshot`, `errors`,
    `close`) that the checker watches. `subscribe` retries while the cluster cannot
    take it yet (each failure goes into the trace): programs test their data structure,
    not the first subscribe. `real` is the node itself, for everything else."""

    def __init__(
        self,
        real: CopyCat,
        checker: Checker,
        who: str,
        tags: Callable[[], bytes],
        recorders: dict[str, Recorder],
        trace: Callable[[str], None],
    ) -> None:
        self.real = real
        self._checker = checker
        self._who = who
        self._tags = tags
        self._recorders = recorders
        self._trace = trace

    @property
    def node_id(self) -> int:
        return self.real.node_id

    async def subscribe(
        self, data_structure_id: DataStructureId | str, snapshot_provider: SnapshotProvider
    ) -> Recorder:
        ds = str(data_structure_id)
        who = f"{self._who}/{ds[-4:]}"
        rec = Recorder(self._checker, who, ds, self._tags)
        provider = rec.provider(snapshot_provider)
        while True:
            try:
                rec.sub = await self.real.subscribe(data_structure_id, provider)
                break
            except CopyCatError as exc:
                self._trace(f"{who} subscribe failed: {type(exc).__name__}")
                await asyncio.sleep(1.0)
        self._recorders[ds] = rec
        self._trace(f"{who} subscribed")
        return rec


class SimNode:
    """One run of a simulated node, as a program sees it."""

    def __init__(
        self,
        node_id: int,
        copycat: CheckedCopyCat,
        data_structures: tuple[DataStructureId, ...],
        rng: random.Random,
        writing: Callable[[], bool],
        states: dict[str, Callable[[], object]],
    ) -> None:
        self.node_id = node_id
        self.copycat = copycat
        """Subscribe here (`await node.copycat.subscribe(ds, provider)`)."""
        self.data_structures = data_structures
        """The data structures this node subscribes to (the same ones at every run)."""
        self.random = rng
        """The program's generator: every choice it makes comes from here, so a seed
        replays identically."""
        self._writing = writing
        self._states = states

    @property
    def writing(self) -> bool:
        """True while the program should keep proposing; False once the simulation
        settles (faults healed, every subscriber catching up)."""
        return self._writing()

    def report_state(
        self, data_structure_id: DataStructureId | str, state: Callable[[], object]
    ) -> None:
        """Tell the checker how to read this node's copy of a data structure (a value
        compared with `==`). Once every subscriber holds every committed value, every
        live node's state of it must be equal."""
        self._states[str(data_structure_id)] = state


async def unique_values(node: SimNode) -> None:
    """The built-in program: on every data structure, propose unique values at random
    intervals while writing; about a third of the readers are slow, and half of the
    snapshot providers await (up to 0.3 s) before they answer; the state is only what
    the stream delivered (the checker's own history)."""

    async def one(ds: DataStructureId) -> None:
        pause_s = node.random.choice((0.0, 0.0, 0.05, 0.3))

        async def awaiting() -> bytes:
            # A provider that awaits (as one that reads a database would): the stream
            # goes on meanwhile, and the snapshot must describe the moment it was asked.
            await asyncio.sleep(pause_s)
            return b""

        rec = await node.copycat.subscribe(ds, awaiting if pause_s else lambda: b"")
        slow = node.random.random() < 0.3
        reader = asyncio.get_running_loop().create_task(drain(rec, slow_s=0.05 if slow else 0.0))
        while node.writing:
            await asyncio.sleep(node.random.expovariate(4.0))
            if not node.writing:
                break
            with contextlib.suppress(CopyCatError):  # counted by the checker
                await rec.propose(b"")
        await reader

    await asyncio.gather(*(one(ds) for ds in node.data_structures))
