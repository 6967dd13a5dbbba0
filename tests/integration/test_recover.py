"""Disaster recovery with real processes: a group of 3 voters loses 2 of them for good
(kill -9, data dirs deleted); `copycat recover` (the real command line, against the
survivor's HTTP endpoint) refuses while the group has a leader, then rebuilds the group
from the survivor: every value it delivered is still there, a new node's subscriber
receives them all in order once, the group takes writes again, and it is topped back
up to 3 voters as new nodes join."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from .cluster import (
    NodeProcess,
    ProcessCluster,
    acked,
    check_streams,
    proposed,
    status,
    voters_seen_by_leaders,
    wait_until,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

FLAGS = ["--http-port=0", "--snapshot-every=40", "--snapshot-keep=5"]


def recover_cli(node: NodeProcess, ds: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """`copycat recover --node <node's HTTP endpoint> ds [flags]`, as an operator runs it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "copycat.cli",
            "recover",
            "--node",
            str(node.ready["http"]),
            ds,
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_recover_rebuilds_a_group_from_its_last_voter(procs: ProcessCluster) -> None:
    # init: 3 nodes, a group of 3 voters, 60 values delivered by node 1's subscriber
    n1 = procs.add(1, extra=FLAGS)
    procs.add(2, extra=FLAGS)
    procs.add(3, extra=FLAGS)
    procs.wait_members(3)
    n1.send(op="allocate", replicas=3)
    ds = str(n1.wait_for("allocated")["id"])
    n1.send(op="subscribe", id=ds)
    n1.wait_for("subscribed")
    n1.send(op="propose", id=ds, prefix="before-", count=60, concurrency=4)
    wait_until(lambda: proposed(n1, "before-"), 60, "proposals before the disaster")
    before = set(acked(n1))
    assert len(before) == 60
    check_streams([n1], ds, before)

    # the group has a leader: refused, nothing changed
    refused = recover_cli(n1, ds, "--yes")
    assert refused.returncode == 1, refused
    assert "RecoveryRefusedError" in refused.stderr
    assert "leader" in refused.stderr
    assert sorted(status(n1)[ds]["voters"]) == [1, 2, 3]  # type: ignore[call-overload]

    # act: nodes 2 and 3 are lost for good (kill -9, their data dirs deleted)
    for node_id in (2, 3):
        lost = procs.nodes.pop(node_id)
        lost.kill()
        shutil.rmtree(lost.data_dir)

    # the dry run is refused until gossip and raft both stop hearing from them, then
    # reports what may be lost and changes nothing (exit 3)
    refusals: list[str] = []
    deadline = time.monotonic() + 90
    while True:
        dry = recover_cli(n1, ds)
        if dry.returncode == 3:
            break
        assert dry.returncode == 1, dry
        assert "RecoveryRefusedError" in dry.stderr, dry.stderr
        refusals.append(dry.stderr)
        assert time.monotonic() < deadline, f"still refused: {dry.stderr}"
        time.sleep(1.0)
    # gossip takes seconds to declare a killed node failed: until then both still count
    # as reachable, and the refusal names them with the evidence
    assert refusals, "recovered before gossip could tell that the voters were gone"
    assert "reachable voter 2: gossip" in refusals[0]
    assert "reachable voter 3: gossip" in refusals[0]
    assert "DRY RUN" in dry.stdout
    assert "MAY BE LOST" in dry.stdout
    assert "--yes" in dry.stdout
    assert sorted(status(n1)[ds]["voters"]) == [1, 2, 3]  # type: ignore[call-overload]

    done = recover_cli(n1, ds, "--yes")
    assert done.returncode == 0, done
    assert "RECOVERED" in done.stdout
    assert "MAY BE LOST" in done.stdout

    # check: the survivor alone is the voter, its subscriber still holds every value
    wait_until(lambda: voters_seen_by_leaders([n1]) == {ds: [1]}, 30, "node 1 leads alone")
    check_streams([n1], ds, before)
    # the group takes writes again
    n1.send(op="propose", id=ds, prefix="after-", count=30, concurrency=4)
    wait_until(lambda: proposed(n1, "after-"), 60, "proposals after the recovery")
    everything = set(acked(n1))
    assert len(everything) == 90, "a proposal after the recovery failed"

    # new nodes join: the group is topped back up to 3 voters, never the dead ones
    n4 = procs.add(4, extra=FLAGS)
    procs.add(5, extra=FLAGS)
    procs.wait_members(3)
    wait_until(
        lambda: voters_seen_by_leaders(list(procs.nodes.values())) == {ds: [1, 4, 5]},
        90,
        "the group topped up to 3 voters on nodes 1, 4 and 5",
    )
    # a fresh subscriber on a new node receives every value, in order, once
    n4.send(op="subscribe", id=ds)
    n4.wait_for("subscribed")
    streams = check_streams([n1, n4], ds, everything)
    assert streams[4] == streams[1]
    assert len(streams[1]) == 90
    print(f"recover refused {len(refusals)} dry runs before the evidence allowed it")
    print(done.stdout)
