"""The deterministic simulator: safety over many seeded, fault-injected runs, proof that
each check can fail (deliberate bugs), and bit-for-bit replay of a seed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from copycat.testing import raftsim
from copycat.testing.raftsim import (
    BUG_NAMES,
    DEFAULT_PROFILE,
    FEW_VOTERS_PROFILE,
    HOSTILE_PROFILE,
    LEASE_PROFILE,
    PROFILE_FOR_BUG,
    PROFILES,
    Simulation,
    options_for_bug,
    run_seeds,
)

DEFAULT_SEEDS = 300
CHUNK = 25


def _assert_clean(seeds: range, options: raftsim.SimOptions) -> None:
    results = run_seeds(seeds, options)
    failures = [f"seed {r.seed}: {r.violation}" for r in results if r.violation is not None]
    assert not failures, "\n".join(failures)
    # The runs did real work: entries committed, elections held, faults injected.
    assert sum(r.committed for r in results) > 50 * len(results)
    assert sum(r.crashes for r in results) > 0


@pytest.mark.parametrize("first", range(0, DEFAULT_SEEDS, CHUNK))
def test_default_profile_keeps_every_safety_property(first: int) -> None:
    """300 seeds (12 chunks of 25) of the default fault profile: no violation of
    election safety, log matching, leader completeness or state machine safety, and
    every run heals into a leader that commits fresh proposals everywhere."""
    _assert_clean(range(first, first + CHUNK), DEFAULT_PROFILE)


@pytest.mark.parametrize("first", range(0, 100, CHUNK))
def test_hostile_profile_keeps_every_safety_property(first: int) -> None:
    """The profile that exposes the deliberate bugs is itself survivable by a correct
    core: 100 seeds, no violation."""
    _assert_clean(range(first, first + CHUNK), HOSTILE_PROFILE)


def test_few_voters_profile_keeps_every_safety_property() -> None:
    """One or two voters plus learners, under the hostile faults: a lone leader is a
    quorum by itself, and its learners must never apply what it could still lose."""
    _assert_clean(range(CHUNK), FEW_VOTERS_PROFILE)


def test_lease_profile_keeps_every_safety_property() -> None:
    """Every group reads with leases (LEASE_BASED) under partitions and crashes, and
    every read must cover all that was committed before it began; many reads are
    answered from the lease, without a heartbeat round."""
    results = run_seeds(range(CHUNK), LEASE_PROFILE)
    failures = [f"seed {r.seed}: {r.violation}" for r in results if r.violation is not None]
    assert not failures, "\n".join(failures)
    assert all(r.lease_reads for r in results)
    assert sum(r.reads_at_once for r in results) > 10 * len(results)
    # ... and others take the ReadIndex round (no lease held, or a follower's read)
    assert sum(r.reads_served for r in results) > sum(r.reads_at_once for r in results)


LEASE_BUG_SEED = 12
"""The first seed of the lease profile on which `stale_lease_reads` (issue 15: the lease
is check-quorum alone) serves a stale read: `python -m copycat.testing.raftsim --seed 12
--profile lease --bug stale_lease_reads`."""


def test_the_recorded_seed_catches_stale_lease_reads() -> None:
    """Issue 15's bug, an old leader cut off from the others answering lease reads after
    they elected a new leader and committed more, is a linearizable-read violation on
    the recorded seed; the same seed passes on the real code."""
    buggy = Simulation(LEASE_BUG_SEED, options_for_bug("stale_lease_reads", LEASE_PROFILE)).run()
    assert buggy.violation is not None
    assert buggy.violation.kind == "linearizable read"
    assert "LEASE_BASED" in buggy.violation.detail
    fixed = Simulation(LEASE_BUG_SEED, LEASE_PROFILE).run()
    assert fixed.violation is None
    assert fixed.reads_at_once > 0


@pytest.mark.parametrize("bug", BUG_NAMES)
def test_each_deliberate_bug_is_caught_within_200_seeds(bug: str) -> None:
    """Proof that the checks can fail: with one rule of the paper broken, the simulator
    reports a violation within the first 200 seeds of its profile (`PROFILE_FOR_BUG`),
    and that seed replays identically."""
    options = options_for_bug(bug, PROFILES[PROFILE_FOR_BUG[bug]])
    results = run_seeds(range(200), options, stop_at_first=True)
    found = results[-1]
    assert found.violation is not None, f"{bug}: no violation in 200 seeds"
    replay = Simulation(found.seed, options).run()
    assert replay.violation == found.violation
    assert replay.committed == found.committed


def test_seeds_run_groups_of_one_and_two_voters_with_learners() -> None:
    """A lone voter with learners (replicas=1, a group made on a one-node cluster) is
    where a leader alone is a quorum; the seeds must run that shape, and two voters,
    as well as the classic three and five."""
    sims = [Simulation(seed, DEFAULT_PROFILE) for seed in range(40)]
    voter_counts = {len(sim.initial_voters) for sim in sims}
    assert {1, 2, 3, 5} <= voter_counts
    assert all(sim.initial_learners for sim in sims if len(sim.initial_voters) == 1)


def test_a_seed_replays_bit_for_bit() -> None:
    first = Simulation(7, DEFAULT_PROFILE).run()
    second = Simulation(7, DEFAULT_PROFILE).run()
    assert first == second
    assert first.committed > 0


def test_different_seeds_explore_different_runs() -> None:
    results = run_seeds(range(5), replace(DEFAULT_PROFILE, rounds=300))
    assert len({(r.committed, r.elections, r.crashes) for r in results}) > 1


def test_cli_prints_a_json_summary_last(capsys: pytest.CaptureFixture[str]) -> None:
    code = raftsim.main(["--seeds", "3", "--rounds", "300"])
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert code == 0
    assert summary["seeds"] == 3
    assert summary["violations"] == 0
    assert summary["committed"] > 0


def test_cli_reports_a_failing_seed_and_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code = raftsim.main(["--seeds", "20", "--bug", "double_vote", "--profile", "hostile"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 1
    assert summary["violations"] >= 1
    seed = summary["failing_seeds"][0]
    assert f"replay with --seed {seed}" in captured.err


@pytest.mark.slow
@pytest.mark.parametrize("first", range(DEFAULT_SEEDS, 5000, 100))
def test_long_run_default_profile(first: int) -> None:
    _assert_clean(range(first, first + 100), DEFAULT_PROFILE)


@pytest.mark.slow
@pytest.mark.parametrize("first", range(100, 2000, 100))
def test_long_run_hostile_profile(first: int) -> None:
    _assert_clean(range(first, first + 100), HOSTILE_PROFILE)
