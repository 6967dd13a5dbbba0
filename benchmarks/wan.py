"""CopyCat over long links: commit latency, throughput, elections, failover, leadership
following the writers, and snapshot transfer, with real node processes whose transport
crosses the WAN emulator (copycat.testing.wan).

What it measures, per round trip time (default 0, 30, 100 and 150 ms; every pair of nodes
at that RTT, +/- `--jitter-ms` on each one-way delay at `--jitter-from-ms` and above), on 3 node processes in 3 data
centers (`Config.wan()`: durable, mutual TLS, gossip keys, zstd), one group of 3 voters
with a subscriber on every node:

* `leader_node_p50_ms` / `_p99_ms`: one proposer with one proposal in flight, on the
  leader's node (the bound: 1 RTT to the nearest other voter, plus an fsync);
* `follower_node_p50_ms` / `_p99_ms`: the same on a follower's node (the proposal
  travels to the leader first: 2 RTT), with leadership pinned (`leader_follows_writers`
  off);
* `proposals_per_s`: 100-byte proposals from a follower's node, `--concurrency` in
  flight;
* `elections`: terms gone by during all of the above (0 means no spurious election),
  which at the largest RTT includes `--soak-s` seconds of a proposer on a follower's
  node proposing one at a time (`soak_commits`);
* `failover_s`: the leader's process killed with SIGKILL, until a proposer that keeps
  proposing one at a time on a follower's node sees its next commit; beside it
  `election_timeout_s`, the configured timeout, and `election_timeout_max_s`: a
  follower campaigns after a time drawn between the two;
* with `leader_follows_writers` on, in a new cluster: `follow_s`, how long a lone
  proposer on a follower's node writes before leadership moves to its node, and
  `followed_p50_ms`, its p50 afterwards.

Then, once, `snapshot`: a fourth node in a fourth data center subscribes to a group
whose state is `--snapshot-mb` MiB of random bytes (incompressible: the link's own
speed), over links capped at `--snapshot-mbit` Mbit/s at `--snapshot-rtt-ms`; the time
from `subscribe` to the loaded snapshot gives `mb_per_s` and its ratio to the link's
ideal time (`ratio_to_ideal`); meanwhile a proposer on the new node keeps proposing to
another group across the same capped links, and `side_max_wait_s` is its longest wait
for a commit (`side_commits_during` its commits), `elections` the terms gone by in
that group.

Gossip's UDP is not delayed (the emulator relays the transport only); gossip's own "wan"
timing assumes slow links.

How to run (about 12 minutes with the defaults; the issue's figures are
`--snapshot-mb 100 --soak-s 600`):

    .venv/bin/python benchmarks/wan.py
    .venv/bin/python benchmarks/wan.py --rtts 100 --samples 50 --skip-snapshot

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from copycat import Config
from copycat.testing.wan import WanEmulator, format_routes, routes_for
from copycat.transport import make_dev_certs

WORKER = Path(__file__).with_name("wan_node.py")
MIB = 1 << 20


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Node:
    """One node process of this benchmark (killed by `kill`, and by the cluster's end)."""

    def __init__(self, node_id: int, port: int, gossip_port: int) -> None:
        self.node_id = node_id
        self.port = port
        self.gossip_port = gossip_port
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None

    def start(self, root: Path, peers: list[str], routes: str, extra: list[str]) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                f"--node-id={self.node_id}",
                f"--data-dir={root / f'node{self.node_id}'}",
                f"--port={self.port}",
                f"--gossip-port={self.gossip_port}",
                f"--peers={','.join(peers)}",
                f"--data-center=dc{self.node_id}",
                f"--routes={routes}",
                f"--tls-dir={root / 'tls'}",
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(root / f"node{self.node_id}.log").open("w"),
            text=True,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait("ready", 60)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.events.put(json.loads(line))

    def send(self, **cmd: object) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, name: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event.get("event") == name:
                return event
            if event.get("event") == "error":
                raise RuntimeError(f"node {self.node_id}: {event}")
        raise RuntimeError(f"node {self.node_id}: no {name} within {timeout_s} s")

    def ask(self, name: str, timeout_s: float = 600.0, **cmd: object) -> dict[str, Any]:
        self.send(**cmd)
        return self.wait(name, timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


class Cluster:
    """Node processes in data centers dc1, dc2, ..., their transports linked through
    `wan`. Nodes are started by `start`; `close` kills the ones still running."""

    def __init__(self, root: Path, wan: WanEmulator, count: int) -> None:
        self.root = root
        self.wan = wan
        self.key = base64.b64encode(os.urandom(32)).decode()
        make_dev_certs(root / "tls", list(range(1, count + 1)))
        ports = free_ports(2 * count)
        self.nodes = {i: Node(i, ports[2 * i - 2], ports[2 * i - 1]) for i in range(1, count + 1)}
        self.routes = routes_for(wan, {i: ("127.0.0.1", n.port) for i, n in self.nodes.items()})

    def start(self, node_id: int, extra: list[str]) -> Node:
        node = self.nodes[node_id]
        first = self.nodes[1]
        peers = [] if node_id == 1 else [f"127.0.0.1:{first.gossip_port}"]
        args = [f"--gossip-key={self.key}", *extra]
        node.start(self.root, peers, format_routes(self.routes[node_id]), args)
        return node

    def wait_members(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.nodes[1].ask("members", 10, op="members")["count"] >= count:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{count} members did not show within 60 s")

    def leader_of(self, ds: str, asked: list[int], timeout_s: float = 60.0) -> tuple[int, int]:
        """(leader, term) of `ds` once one of `asked` knows a leader."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for i in asked:
                status = self.nodes[i].ask("status", 10, op="status", id=ds)
                if status["leader"] in asked:
                    return int(status["leader"]), int(status["term"])
            time.sleep(0.1)
        raise RuntimeError(f"no leader of {ds} among {asked} within {timeout_s} s")

    def close(self) -> None:
        for node in self.nodes.values():
            node.kill()


def three(root: Path, wan: WanEmulator, follow: bool, extra: list[str]) -> tuple[Cluster, str]:
    """A cluster of 3 in 3 data centers and one data structure of 3 voters, subscribed
    on every node."""
    cluster = Cluster(root, wan, 3)
    flags = [f"--follow-writers={'yes' if follow else 'no'}", *extra]
    for i in (1, 2, 3):
        cluster.start(i, flags)
    cluster.wait_members(3)
    ds = str(cluster.nodes[1].ask("allocated", 120, op="allocate", replicas=3)["id"])
    for node in cluster.nodes.values():
        node.ask("subscribed", 120, op="subscribe", id=ds)
    return cluster, ds


def run_rtt(rtt_ms: float, args: argparse.Namespace) -> dict[str, Any]:
    rtt_s = rtt_ms / 1e3
    jitter_s = args.jitter_ms / 1e3 if rtt_ms >= args.jitter_from_ms else 0.0
    wan_config = Config.wan(max_rtt_s=0.15, gossip_keys=[base64.b64encode(bytes(32)).decode()])
    out: dict[str, Any] = {
        "rtt_ms": rtt_ms,
        "jitter_ms": jitter_s * 1e3,
        "election_timeout_s": wan_config.election_ticks * wan_config.tick_interval_s,
        "election_timeout_max_s": 2 * wan_config.election_ticks * wan_config.tick_interval_s,
    }
    with tempfile.TemporaryDirectory() as tmp, WanEmulator(seed=int(rtt_ms)) as wan:
        if args.follow_only:
            out.update(follow(Path(tmp) / "follow", wan, rtt_s, jitter_s, args))
            return out
        cluster, ds = three(Path(tmp) / "pinned", wan, follow=False, extra=[])
        try:
            wan.set_rtt(cluster.nodes, rtt_s, jitter_s=jitter_s)
            time.sleep(2 * rtt_s + 1)
            leader, term = cluster.leader_of(ds, [1, 2, 3])
            follower = next(i for i in (1, 2, 3) if i != leader)
            say(f"  rtt {rtt_ms} ms: leader {leader}, latency on it and on {follower}")
            lat = cluster.nodes[leader].ask("latency", op="latency", id=ds, samples=args.samples)
            out["leader_node_p50_ms"] = round(lat["p50_ms"], 2)
            out["leader_node_p99_ms"] = round(lat["p99_ms"], 2)
            lat = cluster.nodes[follower].ask("latency", op="latency", id=ds, samples=args.samples)
            out["follower_node_p50_ms"] = round(lat["p50_ms"], 2)
            out["follower_node_p99_ms"] = round(lat["p99_ms"], 2)
            say(f"  rtt {rtt_ms} ms: {args.count} proposals from node {follower}")
            rate = cluster.nodes[follower].ask(
                "throughput", op="throughput", id=ds, count=args.count, concurrency=args.concurrency
            )
            out["proposals_per_s"] = round(rate["per_s"])
            if args.soak_s and rtt_ms == max(args.rtt_list):
                say(f"  rtt {rtt_ms} ms: {args.soak_s:g} s of one proposer at a time")
                cluster.nodes[follower].ask("probing", op="probe", id=ds)
                time.sleep(args.soak_s)
                acks = cluster.nodes[follower].ask("probed", op="probe_stop", id=ds)["acks"]
                out["soak_s"] = args.soak_s
                out["soak_commits"] = len(acks)
            _, term_after = cluster.leader_of(ds, [1, 2, 3])
            out["elections"] = term_after - term
            out["failover_s"] = failover(cluster, ds, rtt_s)
        finally:
            cluster.close()
        if rtt_ms and not args.skip_follow:
            out.update(follow(Path(tmp) / "follow", wan, rtt_s, jitter_s, args))
    return out


def failover(cluster: Cluster, ds: str, rtt_s: float) -> float:
    """Seconds from the leader's SIGKILL to the next commit a follower's proposer sees."""
    leader, _ = cluster.leader_of(ds, [1, 2, 3])
    prober = next(i for i in (1, 2, 3) if i != leader)
    cluster.nodes[prober].ask("probing", op="probe", id=ds)
    time.sleep(2 + 4 * rtt_s)
    killed_at = time.monotonic()
    cluster.nodes[leader].kill()
    # A commit acknowledged within one RTT of the kill may have been decided before it.
    ack = cluster.nodes[prober].ask(
        "probe_ack", 200, op="probe_wait", id=ds, after=killed_at + rtt_s, timeout=120
    )["at"]
    cluster.nodes[prober].ask("probed", op="probe_stop", id=ds)
    if ack is None:
        raise RuntimeError("no commit within 120 s of the leader's kill")
    return round(ack - killed_at, 2)


def follow(
    root: Path, wan: WanEmulator, rtt_s: float, jitter_s: float, args: argparse.Namespace
) -> dict[str, Any]:
    """A lone proposer on a follower's node, with leadership following the writers."""
    cluster, ds = three(root, wan, follow=True, extra=[])
    try:
        wan.set_rtt(cluster.nodes, rtt_s, jitter_s=jitter_s)
        time.sleep(2 * rtt_s + 1)
        leader, _ = cluster.leader_of(ds, [1, 2, 3])
        writer = next(i for i in (1, 2, 3) if i != leader)
        say(f"  rtt {rtt_s * 1e3:g} ms: node {writer} writes until it leads")
        started = time.monotonic()
        moved = None
        while time.monotonic() - started < args.follow_timeout:
            cluster.nodes[writer].ask("latency", op="latency", id=ds, samples=10)
            now_leader, _ = cluster.leader_of(ds, [1, 2, 3])
            if now_leader == writer:
                moved = time.monotonic() - started
                break
        if moved is None:
            return {"follow_s": None, "followed_p50_ms": None}
        lat = cluster.nodes[writer].ask("latency", op="latency", id=ds, samples=args.samples)
        return {"follow_s": round(moved, 1), "followed_p50_ms": round(lat["p50_ms"], 2)}
    finally:
        cluster.close()


def run_snapshot(args: argparse.Namespace) -> dict[str, Any]:
    rtt_s = args.snapshot_rtt_ms / 1e3
    bandwidth = args.snapshot_mbit * 1e6 / 8
    with tempfile.TemporaryDirectory() as tmp, WanEmulator(seed=4) as wan:
        cluster = Cluster(Path(tmp), wan, 4)
        try:
            flags = [f"--blob-mb={args.snapshot_mb}", "--snapshot-every=500"]
            for i in (1, 2, 3):
                cluster.start(i, flags)
            cluster.wait_members(3)
            first = cluster.nodes[1]
            side = str(first.ask("allocated", 120, op="allocate", replicas=3)["id"])
            big = str(first.ask("allocated", 120, op="allocate", replicas=3)["id"])
            for i in (1, 2, 3):
                for ds in (side, big):
                    cluster.nodes[i].ask("subscribed", 120, op="subscribe", id=ds)
            first.ask("filled", op="fill", id=big, count=600)  # a snapshot, the log compacted
            time.sleep(3)
            fourth = cluster.start(4, flags)
            cluster.wait_members(4)
            wan.set_rtt([1, 2, 3, 4], rtt_s)
            for i in (1, 2, 3):  # only the links to the new node are capped
                for a, b in ((i, 4), (4, i)):
                    wan.set_link(a, b, replace(wan.link_of(a, b), bandwidth_bytes_per_s=bandwidth))
            fourth.ask("subscribed", 120, op="subscribe", id=side)
            _, side_term = cluster.leader_of(side, [1, 2, 3])
            fourth.ask("probing", op="probe", id=side)  # one at a time, across the capped link
            say(f"  snapshot: {args.snapshot_mb} MiB to dc4 at {args.snapshot_mbit} Mbit/s")
            subscribed = fourth.ask("subscribed", 120, op="subscribe", id=big)["at"]
            loaded = fourth.wait("loaded", args.snapshot_timeout)
            acks = fourth.ask("probed", op="probe_stop", id=side)["acks"]
            took = loaded["at"] - subscribed
            size = loaded["bytes"]
            _, side_term_after = cluster.leader_of(side, [1, 2, 3])
            ideal = size / bandwidth
            during = [t for t in acks if subscribed <= t <= loaded["at"]]
            gaps = [
                b - a for a, b in zip([subscribed, *during], [*during, loaded["at"]], strict=True)
            ]
            return {
                "mb": round(size / MIB, 1),
                "mbit_per_s": args.snapshot_mbit,
                "rtt_ms": args.snapshot_rtt_ms,
                "seconds": round(took, 1),
                "mb_per_s": round(size / MIB / took, 2),
                "ratio_to_ideal": round(took / ideal, 2),
                "elections": side_term_after - side_term,
                "side_commits_during": len(during),
                "side_max_wait_s": round(max(gaps), 2),
            }
        finally:
            cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtts", default="0,30,100,150", help="round trip times, ms")
    parser.add_argument("--jitter-ms", type=float, default=20.0)
    parser.add_argument(
        "--jitter-from-ms", type=float, default=150.0, help="jitter at RTTs from this one"
    )
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8192)
    parser.add_argument("--follow-timeout", type=float, default=120.0)
    parser.add_argument("--snapshot-mb", type=float, default=20.0)
    parser.add_argument("--snapshot-mbit", type=float, default=10.0)
    parser.add_argument("--snapshot-rtt-ms", type=float, default=100.0)
    parser.add_argument("--snapshot-timeout", type=float, default=900.0)
    parser.add_argument("--soak-s", type=float, default=60.0, help="at the largest RTT")
    parser.add_argument("--skip-snapshot", action="store_true")
    parser.add_argument("--skip-follow", action="store_true")
    parser.add_argument("--follow-only", action="store_true", help="only follow_s and its p50")
    args = parser.parse_args()
    args.rtt_list = [float(text) for text in filter(None, args.rtts.split(","))]
    results: dict[str, Any] = {"rtt": {}}
    for rtt in args.rtt_list:
        say(f"rtt {rtt:g} ms")
        results["rtt"][f"{rtt:g}"] = run_rtt(rtt, args)
        say(f"  {json.dumps(results['rtt'][f'{rtt:g}'])}")
    base = None if args.follow_only else results["rtt"].get("0", {}).get("proposals_per_s")
    if base:
        for figures in results["rtt"].values():
            figures["throughput_vs_rtt0"] = round(figures["proposals_per_s"] / base, 2)
    if not args.skip_snapshot:
        say("snapshot")
        results["snapshot"] = run_snapshot(args)
    results["nodes"] = 3
    results["concurrency"] = args.concurrency
    results["cpus"] = os.cpu_count()
    if results["rtt"] and not args.follow_only:
        results["median_failover_s"] = statistics.median(
            f["failover_s"] for f in results["rtt"].values()
        )
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(results))


if __name__ == "__main__":
    main()
