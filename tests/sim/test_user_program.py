"""A user's own data structure under the whole-cluster simulator: the hashmap example
(examples/hashmap.py) on five simulated nodes under crashes, partitions and pauses,
with the checker built in. This is the test docs/testing.md shows users; a map whose
snapshot loses a key shows that the simulator finds a user's bug."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from copycat.errors import CopyCatError
from copycat.testing.sim import Options, SimNode, Simulation

if TYPE_CHECKING:
    from copycat import DataStructureId

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load_hashmap() -> Any:
    spec = importlib.util.spec_from_file_location("hashmap_example", EXAMPLES / "hashmap.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hashmap_example"] = module
    spec.loader.exec_module(module)
    return module


ReplicatedMap = _load_hashmap().ReplicatedMap


async def hashmap_program(node: SimNode, map_class: type = ReplicatedMap) -> None:
    """What every simulated node runs: open the map on each of its data structures, then
    put and delete random keys while the simulation is writing."""

    async def one(ds: DataStructureId) -> None:
        m = await map_class.open(node.copycat, ds)
        node.report_state(ds, lambda: {key: m.get(key) for key in m})
        while node.writing:
            key = f"k{node.random.randrange(8)}"
            with contextlib.suppress(CopyCatError):  # a write that timed out: at most once
                if node.random.random() < 0.2:
                    await m.delete(key)
                else:
                    await m.put(key, f"n{node.node_id}-{node.random.randrange(1000)}")
            await asyncio.sleep(node.random.expovariate(4.0))

    await asyncio.gather(*(one(ds) for ds in node.data_structures))


OPTIONS = {"nodes": 5, "fault_s": 15.0, "settle_s": 60.0, "program": hashmap_program}


@pytest.mark.parametrize("seed", range(1, 11))
def test_the_hashmap_example_under_faults(seed: int) -> None:
    """Every acknowledged write delivered once, in one order, to every subscriber; every
    node's map equal once they caught up; and the run did real work under faults."""
    result = Simulation(seed, Options(**OPTIONS)).run()  # type: ignore[arg-type]
    assert not result["violations"], result["violations"]
    assert result["proposals_ok"] > 100
    faults = ("crashes", "partitions", "pauses", "leaves", "cluster_restarts")
    assert sum(result[kind] for kind in faults) > 0


def test_the_hashmap_run_replays_identically() -> None:
    first = Simulation(3, Options(**OPTIONS))  # type: ignore[arg-type]
    second = Simulation(3, Options(**OPTIONS))  # type: ignore[arg-type]
    first.run()
    second.run()
    assert first.lines == second.lines
    assert len(first.lines) > 50


class ForgetfulMap(ReplicatedMap):  # type: ignore[misc, valid-type]
    """A user's bug: the snapshot leaves out the largest key."""

    def snapshot(self) -> bytes:
        import json

        state = json.loads(super().snapshot())
        if state["data"]:
            state["data"].pop(max(state["data"]))
        return json.dumps(state).encode()


async def forgetful_program(node: SimNode) -> None:
    await hashmap_program(node, ForgetfulMap)


def test_a_map_whose_snapshot_loses_a_key_is_caught() -> None:
    """The states differ once a node loads such a snapshot: found within 10 seeds."""
    caught = []
    for seed in range(1, 11):
        result = Simulation(seed, Options(**{**OPTIONS, "program": forgetful_program})).run()  # type: ignore[arg-type]
        caught += [v for v in result["violations"] if "state of" in v]
        if caught:
            break
    assert caught, "no seed caught a snapshot that loses a key"
