"""`python -m copycat.testing.placementsim`: its JSON line and its exit status."""

from __future__ import annotations

import json

from copycat.testing import placementsim


def test_small_cluster_meets_the_targets(capsys):
    rc = placementsim.main(
        ["--data-centers", "2", "--racks", "2", "--nodes-per-rack", "3", "--groups", "300"]
    )
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert rc == 0, summary
    assert summary["nodes"] == 12
    assert summary["groups"] == 300
    assert summary["replicas"] == 900
    assert summary["rule_violations"] == 0
    assert summary["max_node_over_mean"] <= 1.25
    assert summary["moved_on_leave_fraction"] <= 2 / 12
    assert summary["moved_on_join_fraction"] <= 2 / 12
    assert summary["ok"] is True
    assert summary["missed"] == []
    assert "placementsim:" in err


def test_default_cluster_figures():
    """The issue's cluster (3 x 3 x 4 nodes, 1,000 groups) meets every target."""
    summary = placementsim.simulate()
    assert summary["ok"] is True, summary
    assert summary["nodes"] == 36
    assert summary["replicas"] == 3000
    over_mean = summary["max_node_over_mean"]
    assert isinstance(over_mean, float)
    assert over_mean <= 1.16


def test_missed_target_exits_non_zero(capsys):
    """Plain rendezvous over few groups spreads unevenly: the simulator says so."""
    rc = placementsim.main(["--groups", "30", "--load-factor", "none"])
    out, _ = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert rc == 1
    assert "max_node_over_mean" in summary["missed"]


def test_impossible_rule_exits_2(capsys):
    rc = placementsim.main(
        ["--data-centers", "1", "--racks", "2", "--groups", "5", "--rack-spread", "required"]
    )
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert "asked for 3 replicas" in err
