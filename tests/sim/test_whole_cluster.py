"""The whole-cluster simulator: real nodes on virtual time under faults, judged at the
user's level (every acknowledged value delivered once, in one order, to every
subscriber); proof that the checker fails when durability is broken; and bit-for-bit
replay of a seed."""

from __future__ import annotations

import json

import pytest

from copycat.testing.sim import Bugs, Options, Simulation
from copycat.testing.sim.__main__ import main

DEFAULT_SEEDS = 200
CHUNK = 10
SUITE_OPTIONS = {"nodes": 5, "fault_s": 15.0, "settle_s": 60.0}


def _run(seeds: range, **options: object) -> list[dict[str, object]]:
    return [Simulation(seed, Options(**options)).run() for seed in seeds]  # type: ignore[arg-type]


@pytest.mark.parametrize("first", range(1, DEFAULT_SEEDS + 1, CHUNK))
def test_every_acknowledged_value_reaches_every_subscriber_once_in_one_order(first: int) -> None:
    """200 seeds (20 chunks of 10) of 5 nodes in 3 data centers, groups of 1, 3 and 5
    replicas, under crashes with power cuts, partitions (one way too), pauses and clock
    jumps: no violation, and the runs did real work."""
    results = _run(range(first, first + CHUNK), **SUITE_OPTIONS)
    failures = [f"seed {r['seed']}: {r['violations']}" for r in results if r["violations"]]
    assert not failures, "\n".join(failures)
    assert sum(int(r["proposals_ok"]) for r in results) > 100 * CHUNK  # type: ignore[call-overload]
    assert sum(int(r["delivered"]) for r in results) > 300 * CHUNK  # type: ignore[call-overload]
    assert sum(int(r["crashes"]) for r in results) > 0  # type: ignore[call-overload]


@pytest.mark.slow
@pytest.mark.parametrize("first", range(1, 5001, 250))
def test_long_run_of_5000_seeds(first: int) -> None:
    results = _run(range(first, first + 250))
    failures = [f"seed {r['seed']}: {r['violations']}" for r in results if r["violations"]]
    assert not failures, "\n".join(failures)


def test_a_disk_that_never_syncs_is_caught() -> None:
    """The deliberate bug: syncs acknowledged but never made, so a power cut loses what a
    node acknowledged. The checker must see it within a few seeds."""
    caught = []
    for seed in range(1, 21):
        result = Simulation(seed, Options(**SUITE_OPTIONS, bugs=Bugs(no_fsync=True))).run()  # type: ignore[arg-type]
        if result["violations"]:
            caught.append(seed)
            break
    assert caught, "20 seeds with a disk that never syncs and no violation"


def test_the_same_seed_gives_the_same_trace_twice() -> None:
    first = Simulation(7, Options(**SUITE_OPTIONS))  # type: ignore[arg-type]
    second = Simulation(7, Options(**SUITE_OPTIONS))  # type: ignore[arg-type]
    assert first.run() == second.run()
    assert first.lines == second.lines
    assert len(first.lines) > 50


def test_the_command_prints_a_json_summary_last(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "2", "--fault-s", "10"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("seeds", "violations", "proposals_ok", "delivered", "crashes", "partitions",
                "snapshots", "repairs", "elapsed_s", "simulated_s_per_wall_s"):  # fmt: skip
        assert key in summary
    assert summary["seeds"] == 2
    assert summary["violations"] == 0
