"""End-to-end CopyCat throughput, latency and idle cost, with real node processes.

What it measures, on three node processes on loopback (local preset, 100 ms ticks):
* `proposals_per_s`: 100-byte proposals from one subscriber (an interactive member, so
  proposals are forwarded to the leader), many in flight (`--concurrency`), durable
  storage (fsync on every ready cycle) — the time until each `propose` returned;
* `p50_ms` / `p99_ms`: one proposer with one proposal in flight;
* `read_barrier_p50_ms`: one read barrier at a time (`Subscription.read_barrier`), from
  the subscriber of a node that does not lead the group (ReadIndex forwarded to the
  leader, a heartbeat round, then the local feed);
* `read_barriers_per_s`: `--barrier-concurrency` barriers in flight from that node
  (concurrent barriers share ReadIndex rounds; `read_index_rounds` counts them);
* `proposals_per_s_no_fsync`: the same throughput with `durable=False`;
* `groups_active_proposals_per_s`: `--active-groups` groups of 3 replicas, every node
  subscribed to every group and proposing `--active-count` proposals spread round-robin
  over all of them (`--concurrency` in flight per node), durable: all nodes' proposals
  over the slowest node's time; `active_ratio_to_one_group` divides it by
  `proposals_per_s`;
* `restart_ready_s` / `restart_serving_s`: one durable node hosting `--restart-groups`
  single-replica groups is killed with SIGKILL and restarted; ready is when `start()`
  returned, serving is when every group has a leader again and has committed one
  proposal from a subscriber on the node, both counted from the restart;
* `idle_cpu_pct`: CPU of one node hosting `--idle-groups` quiescent single-replica
  groups, over `--idle-seconds`, as a percentage of one core, and
  `rss_mib_per_1000_groups`: the node's resident memory grown per 1,000 of them, and
  `scrape_metrics_ms` / `scrape_status_ms`: how long that node's event loop spends
  building what `/metrics` and `/status` serve.

How to run (a few minutes; `--parts` picks a subset):

    .venv/bin/python benchmarks/cluster.py
    .venv/bin/python benchmarks/cluster.py --parts active,restart --restart-groups 10000

The last line printed is one JSON object with the figures.

Profiling: `--profile DIR` runs only the durable throughput part with every node under
cProfile and leaves `DIR/node<N>.prof` (read with `python -m pstats`); node 2 proposes.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORKER = Path(__file__).with_name("cluster_node.py")


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Node:
    def __init__(self, node_id: int, root: Path, peers: list[str], durable: bool) -> None:
        self.port, self.gossip_port = free_ports(2)
        self.events: queue.Queue[dict[str, object]] = queue.Queue()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                f"--node-id={node_id}",
                f"--data-dir={root / f'node{node_id}'}",
                f"--port={self.port}",
                f"--gossip-port={self.gossip_port}",
                f"--peers={','.join(peers)}",
                f"--durable={'yes' if durable else 'no'}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait("ready", 60)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def send(self, **cmd: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, name: str, timeout_s: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event.get("event") == name:
                return event
        raise RuntimeError(f"no {name} within {timeout_s} s")

    def stop(self) -> None:
        """Ask the worker to exit (profiles are written then); kill it if it does not."""
        try:
            self.send(op="exit")
            self.proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def cluster(root: Path, durable: bool) -> list[Node]:
    first = Node(1, root, [], durable)
    peers = [f"127.0.0.1:{first.gossip_port}"]
    nodes = [first, Node(2, root, peers, durable), Node(3, root, peers, durable)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        first.send(op="members")
        if first.wait("members", 10)["count"] == 3:
            break
        time.sleep(0.2)
    return nodes


def run_reads(
    nodes: list[Node], ds: object, samples: int, count: int, concurrency: int
) -> dict[str, float]:
    """Read barriers from the subscriber of a node that does not lead `ds`."""
    nodes[0].send(op="leader", id=ds)
    leader = int(nodes[0].wait("leader", 30)["leader"])  # type: ignore[call-overload]
    reader = next(n for i, n in enumerate(nodes, start=1) if i != leader and i != 1)
    if reader is not nodes[1]:
        reader.send(op="subscribe", id=ds)
        reader.wait("subscribed", 30)
    reader.send(op="read_latency", id=ds, samples=samples)
    lat = reader.wait("read_latency", 600)
    reader.send(op="read_throughput", id=ds, count=count, concurrency=concurrency)
    thr = reader.wait("read_throughput", 600)
    return {
        "read_barrier_p50_ms": float(lat["p50_ms"]),  # type: ignore[arg-type]
        "read_barriers_per_s": float(thr["per_s"]),  # type: ignore[arg-type]
        "read_index_rounds": float(int(thr["rounds"]) - int(lat["rounds"])),  # type: ignore[call-overload]
        "read_barriers": float(int(thr["barriers"]) - int(lat["barriers"])),  # type: ignore[call-overload]
    }


def run_throughput(
    durable: bool,
    count: int,
    concurrency: int,
    samples: int,
    reads: tuple[int, int, int] = (0, 0, 0),
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        nodes = cluster(Path(tmp), durable)
        try:
            nodes[0].send(op="allocate", replicas=3)
            ds = nodes[0].wait("allocated", 30)["id"]
            proposer = nodes[1]
            proposer.send(op="subscribe", id=ds)
            proposer.wait("subscribed", 30)
            proposer.send(op="throughput", id=ds, count=count, concurrency=concurrency)
            rate = float(proposer.wait("throughput", 600)["per_s"])  # type: ignore[arg-type]
            out = {"proposals_per_s": rate}
            if samples:
                proposer.send(op="latency", id=ds, samples=samples)
                lat = proposer.wait("latency", 600)
                out["p50_ms"] = float(lat["p50_ms"])  # type: ignore[arg-type]
                out["p99_ms"] = float(lat["p99_ms"])  # type: ignore[arg-type]
            if reads[0]:
                out.update(run_reads(nodes, ds, *reads))
            return out
        finally:
            for node in nodes:
                node.stop()


def run_idle(groups: int, seconds: float) -> tuple[float, int, float, float, float]:
    """(CPU % of one core, groups quiescent, RSS MiB per 1,000 groups, ms to build
    `/metrics`, ms to build `/status`) of one node hosting `groups` idle single-replica
    groups."""
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(1, Path(tmp), [], durable=False)
        try:
            node.send(op="cpu")
            empty = float(node.wait("cpu", 30)["rss_mib"])  # type: ignore[arg-type]
            node.send(op="idle_groups", count=groups)
            node.wait("idle_groups", 3600)
            deadline = time.monotonic() + 120
            while True:  # every group elected itself and went quiet
                time.sleep(1)
                node.send(op="cpu")
                before = node.wait("cpu", 30)
                if before["quiescent"] == groups or time.monotonic() > deadline:
                    break
            time.sleep(seconds)
            node.send(op="cpu")
            after = node.wait("cpu", 30)
            cpu = float(after["cpu_s"]) - float(before["cpu_s"])  # type: ignore[arg-type]
            per_1000 = (float(after["rss_mib"]) - empty) * 1000 / groups  # type: ignore[arg-type]
            node.send(op="scrape")
            scrape = node.wait("scrape", 120)
            return (
                100.0 * cpu / seconds,
                int(after["quiescent"]),  # type: ignore[call-overload]
                per_1000,
                float(scrape["metrics_ms"]),  # type: ignore[arg-type]
                float(scrape["status_ms"]),  # type: ignore[arg-type]
            )
        finally:
            node.kill()


def run_active_groups(groups: int, count: int, concurrency: int) -> float:
    """Aggregate proposals/s over `groups` groups of 3 replicas on 3 nodes, each node
    proposing `count` proposals spread over all of them from its own subscribers
    (`concurrency` in flight per node), durable: the total over the slowest node's time."""
    with tempfile.TemporaryDirectory() as tmp:
        nodes = cluster(Path(tmp), True)
        try:
            nodes[0].send(op="allocate_many", count=groups, replicas=3)
            ids = nodes[0].wait("allocated_many", 1200)["ids"]
            for node in nodes:
                node.send(op="subscribe_many", ids=ids)
            for node in nodes:
                node.wait("subscribed_many", 1200)
            for node in nodes:
                node.send(op="spread", count=count, concurrency=concurrency)
            runs = [node.wait("spread", 1200) for node in nodes]
            slowest = max(float(r["s"]) for r in runs)  # type: ignore[arg-type]
            return len(nodes) * count / slowest
        finally:
            for node in nodes:
                node.stop()


def run_restart(groups: int) -> tuple[float, float]:
    """(s until ready, s until serving) of a node hosting `groups` durable groups after
    kill -9 and restart: serving means every group has a leader and has committed one
    proposal from a subscriber on this node, counted from the restart."""
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(1, Path(tmp), [], durable=True)
        try:
            node.send(op="idle_groups", count=groups)
            node.wait("idle_groups", 3600)
        finally:
            node.kill()
        started = time.monotonic()
        node = Node(1, Path(tmp), [], durable=True)  # returns once the node is ready
        try:
            ready_s = time.monotonic() - started
            node.send(op="subscribe_many")
            served = int(node.wait("subscribed_many", 1200)["count"])  # type: ignore[call-overload]
            assert served == groups, (served, groups)
            node.send(op="spread", count=groups, concurrency=256)
            node.wait("spread", 1200)
            return ready_s, time.monotonic() - started
        finally:
            node.kill()


PARTS = ("throughput", "active", "restart", "idle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--barrier-samples", type=int, default=500)
    parser.add_argument("--barriers", type=int, default=20_000)
    parser.add_argument("--barrier-concurrency", type=int, default=256)
    parser.add_argument("--idle-groups", type=int, default=100_000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--active-groups", type=int, default=1_000)
    parser.add_argument("--active-count", type=int, default=10_000, help="per node")
    parser.add_argument("--restart-groups", type=int, default=10_000)
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument("--profile", metavar="DIR", help="profile the throughput run")
    args = parser.parse_args()
    parts = {p for p in args.parts.split(",") if p}
    if not parts <= set(PARTS):
        parser.error(f"--parts: unknown {sorted(parts - set(PARTS))}")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        os.environ["COPYCAT_BENCH_PROFILE"] = os.path.abspath(args.profile)
        print(json.dumps(run_throughput(True, args.count, args.concurrency, 0)))
        return
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    out: dict[str, object] = {}
    if "throughput" in parts:
        say(
            f"durable: {args.count} proposals, {args.concurrency} in flight, then latency, "
            f"then read barriers ({args.barrier_samples} one at a time, {args.barriers} "
            f"with {args.barrier_concurrency} in flight)"
        )
        reads = (args.barrier_samples, args.barriers, args.barrier_concurrency)
        durable = run_throughput(True, args.count, args.concurrency, args.samples, reads)
        say(f"no fsync: {args.count} proposals")
        fast = run_throughput(False, args.count, args.concurrency, 0)
        out |= {
            "proposals_per_s": round(durable["proposals_per_s"]),
            "p50_ms": round(durable["p50_ms"], 2),
            "p99_ms": round(durable["p99_ms"], 2),
            "read_barrier_p50_ms": round(durable.get("read_barrier_p50_ms", 0.0), 2),
            "read_barriers_per_s": round(durable.get("read_barriers_per_s", 0.0)),
            "read_index_rounds": round(durable.get("read_index_rounds", 0.0)),
            "barrier_concurrency": args.barrier_concurrency,
            "proposals_per_s_no_fsync": round(fast["proposals_per_s"]),
        }
    if "active" in parts:
        say(
            f"active: {args.active_groups} groups of 3 replicas, {args.active_count} proposals "
            f"from each node spread over all of them"
        )
        active = run_active_groups(args.active_groups, args.active_count, args.concurrency)
        out["groups_active_proposals_per_s"] = round(active)
        out["active_groups"] = args.active_groups
        if "proposals_per_s" in out:
            out["active_ratio_to_one_group"] = round(active / float(out["proposals_per_s"]), 2)
    if "restart" in parts:
        say(f"restart: kill -9 a node hosting {args.restart_groups} groups, then restart it")
        ready_s, serving_s = run_restart(args.restart_groups)
        out |= {
            "restart_ready_s": round(ready_s, 2),
            "restart_serving_s": round(serving_s, 2),
            "restart_groups": args.restart_groups,
        }
    if "idle" in parts:
        say(f"idle: {args.idle_groups} groups on one node for {args.idle_seconds} s")
        idle = run_idle(args.idle_groups, args.idle_seconds)
        idle_pct, quiescent, rss_per_1000, metrics_ms, status_ms = idle
        out |= {
            "idle_cpu_pct": round(idle_pct, 2),
            "idle_groups": args.idle_groups,
            "idle_groups_quiescent": quiescent,
            "rss_mib_per_1000_groups": round(rss_per_1000, 2),
            "scrape_metrics_ms": round(metrics_ms, 1),
            "scrape_status_ms": round(status_ms, 1),
        }
    out |= {
        "nodes": 3,
        "payload_bytes": 100,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
