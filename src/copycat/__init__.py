"""CopyCat: replicate a program's own data structures across nodes and data centers,
in order and exactly once.

    async with copycat.CopyCat(copycat.Config.default()) as cc:
        ds = await cc.allocate_data_structure(replicas=3)
        sub = await cc.subscribe(ds, snapshot_provider=my_map.snapshot)
        await sub.propose(b"put k v")
        async for item in sub.commits():
            ...

Run it with `copycat.run(main())` (uvloop when installed, else asyncio's loop) or any
asyncio runner. `copycat.sync` offers the same with threads and blocking channels.
"""

from __future__ import annotations

from copycat._config import Config as Config
from copycat._ids import DataStructureId as DataStructureId
from copycat._ids import new_data_structure_id as new_data_structure_id
from copycat._node import CopyCat as CopyCat
from copycat._node import Subscription as Subscription
from copycat._snapshot import LOAD_SNAPSHOT as LOAD_SNAPSHOT
from copycat._snapshot import LoadSnapshot as LoadSnapshot
from copycat._version import __version__ as __version__
from copycat.errors import InvalidIdError as InvalidIdError
from copycat.transport import run as run

__all__ = [
    "LOAD_SNAPSHOT",
    "Config",
    "CopyCat",
    "DataStructureId",
    "InvalidIdError",
    "LoadSnapshot",
    "Subscription",
    "__version__",
    "new_data_structure_id",
    "run",
]
