"""A distributed hashmap on CopyCat: the original README's example, in asyncio Python.

Every node that subscribes to the map's data structure holds a full copy of the dict.
Writes (`put`, `delete`) are proposals: CopyCat commits them through the data
structure's raft group and hands every subscriber the same operations in the same
order, exactly once, so every copy goes through the same states. Reads (`get`) are
local and may be stale, as in the original; a writer reads its own writes (`put`
returns once applied here), and `sync()` is a read barrier for everything committed.

Run it:

    python examples/hashmap.py

It starts one node on free loopback ports in a temporary directory, writes and deletes
a few keys, then stops the node and starts it again on the same directory to show the
map coming back from its snapshot (`LOAD_SNAPSHOT`) and the log after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

import copycat
from copycat.errors import CopyCatError

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger("hashmap")

MAP_ID: Final = "01CFR5R4JJE9KNRAJFFEAQ2SAJ"
"""The data structure id of the original README: every node that subscribes to it sees
the same map."""


class ReplicatedMap:
    """A `dict[str, str]` replicated by CopyCat.

    * `get`, `keys` and `len()` read the local copy (fast, possibly stale).
    * `put` and `delete` return once the operation is committed *and* applied to the
      local copy, so a `get` on this node right after sees it (read your writes:
      `propose(..., wait_delivered=True)` waits until the commit loop took it).
    * `sync()` is a read barrier: afterwards the local copy holds every write any node
      had seen committed before the call.
    * The state CopyCat snapshots is the dict as JSON; on `LOAD_SNAPSHOT` the map is
      replaced by the snapshot's dict, then the operations after it are applied.

    Open one with `await ReplicatedMap.open(cc, data_structure_id)`; `close()` stops it.
    """

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._sub: copycat.Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.applied = 0
        """Operations applied since the map was opened."""
        self.snapshots_loaded = 0
        """How many times the map was replaced by a snapshot (`LOAD_SNAPSHOT`)."""
        self._stopped = False

    @classmethod
    async def open(
        cls, cc: copycat.CopyCat, data_structure_id: copycat.DataStructureId | str = MAP_ID
    ) -> ReplicatedMap:
        """Subscribe to the data structure (creating it when no node hosts it yet) and
        start applying its committed operations."""
        m = cls()
        m._sub = await cc.subscribe(data_structure_id, snapshot_provider=m.snapshot)
        m._tasks = [
            asyncio.create_task(m._serve_commits(), name="hashmap commits"),
            asyncio.create_task(m._serve_errors(), name="hashmap errors"),
        ]
        return m

    # -- reads: local ---------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """The value of `key` in the local copy, or None."""
        return self._data.get(key)

    def keys(self) -> list[str]:
        """The keys of the local copy, sorted."""
        return sorted(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    # -- writes: proposals ----------------------------------------------------------------

    async def put(self, key: str, value: str) -> None:
        """Set `key` to `value` on every copy; return once applied here."""
        await self._propose({"op": "put", "key": key, "value": value})

    async def delete(self, key: str) -> None:
        """Remove `key` from every copy (a no-op where absent); return once applied here."""
        await self._propose({"op": "delete", "key": key})

    async def sync(self) -> None:
        """Wait until the local copy holds every write committed before this call."""
        if self._stopped:
            raise CopyCatError("the map's commit loop has stopped: the map is closed")
        await self._subscription().read_barrier()

    async def _propose(self, operation: dict[str, str]) -> None:
        if self._stopped:
            raise CopyCatError("the map's commit loop has stopped: the map is closed")
        # Returns once the commit loop below has applied it (and come back for more).
        await self._subscription().propose(json.dumps(operation).encode(), wait_delivered=True)

    # -- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The snapshot provider: the whole map as JSON. CopyCat calls it between two
        commits, so it sees exactly the state the commits before it built."""
        return json.dumps({"data": self._data}, sort_keys=True).encode()

    def _restore(self, data: bytes) -> None:
        state = json.loads(data) if data else {"data": {}}
        if not isinstance(state, dict) or not isinstance(state.get("data"), dict):
            raise ValueError("a hashmap snapshot is a JSON object with a 'data' object")
        self._data = {str(k): str(v) for k, v in state["data"].items()}

    # -- the commit loop --------------------------------------------------------------------

    async def _serve_commits(self) -> None:
        sub = self._subscription()
        try:
            async for item in sub.commits():
                if item is copycat.LOAD_SNAPSHOT:
                    # Replace the local copy with a consistent snapshot; the commits
                    # that follow continue from it.
                    self._restore(await sub.load_snapshot())
                    self.snapshots_loaded += 1
                elif isinstance(item, bytes):
                    self._apply(item)
        finally:
            self._stopped = True

    def _apply(self, data: bytes) -> None:
        try:
            operation = json.loads(data)
            op = operation["op"]
            if op == "put":
                self._data[str(operation["key"])] = str(operation["value"])
            elif op == "delete":
                self._data.pop(str(operation["key"]), None)
            else:
                raise ValueError(f"unknown operation {op!r}")
        except (ValueError, KeyError, TypeError) as exc:
            # Every copy skips the same malformed entry, so the copies stay equal.
            log.warning("skipping a malformed operation %r: %s", data[:80], exc)
            return
        self.applied += 1

    async def _serve_errors(self) -> None:
        async for error in self._subscription().errors():
            log.error("ran into error: %s", error)

    def _subscription(self) -> copycat.Subscription:
        if self._sub is None:
            raise RuntimeError("open the map with `await ReplicatedMap.open(cc)`")
        return self._sub

    async def close(self, *, leave: bool = True) -> None:
        """Stop applying commits. With `leave` (the default) the subscription is closed
        too: this node's interactive member leaves the group. A server that will come
        back on the same data dir passes `leave=False` and shuts the node down, which
        keeps the member (and its copy of the log) for the next start."""
        if self._sub is not None and leave:
            await self._sub.close()
        for task in self._tasks:
            task.cancel()
        for task, outcome in zip(
            self._tasks, await asyncio.gather(*self._tasks, return_exceptions=True), strict=True
        ):
            if isinstance(outcome, Exception):
                log.error("%s failed: %r", task.get_name(), outcome)


async def run_node(root: Path, *, first_run: bool) -> None:
    """One life of a single-node cluster whose data dir is `root`/node1."""
    data_dir = root / "node1"
    config = copycat.Config.local(
        data_dir=str(data_dir),
        port=0,  # the OS picks free ports
        gossip_port=0,
        node_id=1,
        snapshot_every_entries=4,  # snapshot often, to show LOAD_SNAPSHOT on restart
    )
    id_file = root / "map-id"
    async with copycat.CopyCat(config) as cc:
        print(f"node {cc.node_id} started, data dir {data_dir}")
        if first_run:
            # One node can hold one replica; a cluster would take replicas=3.
            ds = await cc.allocate_data_structure(replicas=1)
            print(f"allocated data structure {ds}")
            id_file.write_text(str(ds))  # remembered for the second run
        else:
            ds = copycat.DataStructureId.parse(id_file.read_text())
        the_map = await ReplicatedMap.open(cc, ds)
        try:
            if first_run:
                for key, value in [("hello", "world"), ("lang", "python"), ("cat", "copy")]:
                    await the_map.put(key, value)
                    print(f"put {key}={value} -> get({key!r}) = {the_map.get(key)!r}")
                await the_map.delete("lang")
                print(f"delete lang -> get('lang') = {the_map.get('lang')!r}")
                for i in range(6):
                    await the_map.put(f"k{i}", str(i * i))
                print(f"put k0..k5; the map holds {len(the_map)} keys")
            else:
                # The commit loop replays the snapshot, then the entries after it;
                # sync() (a read barrier) returns once it has caught up.
                await the_map.sync()
                print(f"reloaded from snapshot: {the_map.snapshots_loaded > 0}")
                print(f"after restart: hello={the_map.get('hello')!r} lang={the_map.get('lang')!r}")
                print(f"after restart the map holds {len(the_map)} keys: {the_map.keys()}")
                await the_map.put("restarted", "yes")
                print(f"put restarted=yes -> get('restarted') = {the_map.get('restarted')!r}")
        finally:
            await the_map.close()
    print(f"node stopped ({'first run' if first_run else 'second run'})")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="copycat-hashmap-") as root:
        await run_node(Path(root), first_run=True)
        print("restarting the node on the same data dir")
        await run_node(Path(root), first_run=False)
    print("done")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    copycat.run(main())
