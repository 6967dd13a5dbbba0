# The `copycat` command line as a user runs it: `python -m copycat.cli ...` in
# subprocesses (a node never runs in the test process). Every wait is bounded, and
# every process started here is killed by its handle at the end.
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from copycat.cli._demo import free_ports
from copycat.cli._status import STATUS_FILE

CLI = [sys.executable, "-m", "copycat.cli"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("COPYCAT_")}


def _cli(*argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *argv], capture_output=True, text=True, timeout=timeout_s, env=ENV, check=False
    )


@pytest.mark.chaos
def test_demo_runs_replicates_recovers_and_cleans_up() -> None:
    result = _cli("demo", timeout_s=120)
    out = result.stdout
    assert result.returncode == 0, f"stdout:\n{out}\nstderr:\n{result.stderr}"
    root = re.search(r"data in (\S+)", out)
    assert root is not None
    steps = [
        r"node 1 started \(pid \d+, transport 127\.0\.0\.1:\d+, gossip 127\.0\.0\.1:\d+\)",
        r"all 3 nodes see each other",
        r"allocated the hashmap [0-9A-Z]{26} with 3 replicas",
        r"wrote 100 keys through node 1",
        r"node 2 has all 100 keys \(local read: key-0042 = 'value-42'\)",
        r"node 3 has all 100 keys",
        r"killed node 3 \(SIGKILL\)",
        r"wrote 300 more keys and deleted 25 through node 1 while node 3 was down",
        r"node 2 has all 375 keys",
        r"restarted node 3 \(same ports, same data dir\)",
        r"node 3 caught up in [\d.]+ s: 375 keys, same contents as node 1 \(local read: key-0001 = None",
        r"stopped the nodes",
    ]
    position = 0
    for step in steps:  # each progress line, in order, with its timestamp
        match = re.compile(r"^\[\s*[\d.]+s\] " + step, re.MULTILINE).search(out, position)
        assert match is not None, f"missing progress line {step!r} in:\n{out}"
        position = match.end()
    assert "keys written      400 puts and 25 deletes through node 1 (375 keys live)" in out
    assert re.search(r"catch-up +[\d.]+ s from restart", out)
    assert re.search(r"snapshot loaded +yes: .*shipped by another member", out)
    assert out.rstrip().endswith("demo OK")
    assert not Path(root.group(1)).exists(), "the demo left its temporary directory"


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    return tmp_path / "node"


def _wait_for_status(data_dir: Path, proc: subprocess.Popen[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not (data_dir / STATUS_FILE).exists():
        assert proc.poll() is None, f"the node exited early: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "the node wrote no status file in time"
        time.sleep(0.1)


def test_node_runs_reports_status_and_stops_on_sigterm(node_dir: Path) -> None:
    port, gossip = free_ports(2)
    proc = subprocess.Popen(
        [
            *CLI,
            "node",
            f"--data-dir={node_dir}",
            f"--port={port}",
            f"--gossip-port={gossip}",
            "--node-id=7",
            "--data-center=eu-1",
            "--rack=r2",
            "--status-interval-s=0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        _wait_for_status(node_dir, proc, timeout_s=30)
        shown = _cli("status", "--data-dir", str(node_dir))
        assert shown.returncode == 0, shown.stderr
        assert (
            f"node 7 (eu-1/r2) transport 127.0.0.1:{port}, gossip 127.0.0.1:{gossip}: running"
            in (shown.stdout)
        )
        assert re.search(
            rf"^  7\*\s+127\.0\.0\.1:{port}\s+127\.0\.0\.1:{gossip}\s+eu-1\s+r2\s+alive",
            shown.stdout,
            re.MULTILINE,
        )
        as_json = json.loads(_cli("status", "--json", "--data-dir", str(node_dir)).stdout)
        assert as_json[0]["node_id"] == 7
        assert as_json[0]["running"] is True

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "SIGTERM received: shutting down" in err
        assert "node stopped cleanly" in err
        assert "Traceback" not in err
        after = _cli("status", "--data-dir", str(node_dir))
        assert after.returncode == 1
        assert "stopped (shut down cleanly" in after.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_node_that_cannot_start_says_why(node_dir: Path, tmp_path: Path) -> None:
    # Two nodes on one data dir: the second is refused by the data dir's node id (or
    # the log store's lock), with a message and exit 1, not a traceback.
    first_ports, second_ports = free_ports(2), free_ports(2)
    first = subprocess.Popen(
        [
            *CLI,
            "node",
            f"--data-dir={node_dir}",
            f"--port={first_ports[0]}",
            f"--gossip-port={first_ports[1]}",
            "--node-id=3",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    try:
        _wait_for_status(node_dir, first, timeout_s=30)
        second = _cli(
            "node",
            f"--data-dir={node_dir}",
            f"--port={second_ports[0]}",
            f"--gossip-port={second_ports[1]}",
            "--node-id=4",
        )
        assert second.returncode == 1
        assert "cannot start the node" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait(timeout=10)
