"""Raft core throughput and latency, with no I/O at all.

What it measures: a 3-voter group of `RawNode`s over `MemoryLog`s in one process,
messages handed over directly (no network, no disk), following the ready contract.
100-byte proposals are offered to the leader in batches; `entries_per_s` counts entries
committed and applied on all three nodes per second of wall time. `p50_us` / `p99_us`
time one proposal with nothing else in flight, from `propose` on the leader to the
moment the leader applies it (one round trip through the followers).

How to run:

    .venv/bin/python benchmarks/raft_core.py            # about 10 s
    .venv/bin/python benchmarks/raft_core.py --entries 500000 --batch 1000

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque

from copycat.raft import MemoryLog, Message, RaftConfig, RawNode

PAYLOAD = b"x" * 100


class Cluster:
    def __init__(self, size: int = 3) -> None:
        ids = list(range(1, size + 1))
        self.logs = {i: MemoryLog.bootstrap(ids) for i in ids}
        self.nodes = {
            i: RawNode(
                RaftConfig(node_id=i, max_inflight_msgs=4096, max_uncommitted_bytes=0),
                self.logs[i],
            )
            for i in ids
        }
        self.applied = dict.fromkeys(ids, 0)
        self.inbox: deque[Message] = deque()

    def cycle(self) -> bool:
        """Deliver every queued message, then run one ready cycle per node."""
        inbox = self.inbox
        nodes = self.nodes
        while inbox:
            m = inbox.popleft()
            nodes[m.to].step(m)
        busy = False
        for node_id, node in nodes.items():
            if not node.has_ready():
                continue
            busy = True
            rd = node.ready()
            log = self.logs[node_id]
            if rd.snapshot is not None:
                log.apply_snapshot(rd.snapshot)
            if rd.entries:
                log.append(rd.entries)
            if rd.hard_state is not None:
                log.set_hard_state(rd.hard_state)
            inbox.extend(rd.messages)
            if rd.committed_entries:
                self.applied[node_id] = rd.committed_entries[-1].index
            node.advance(rd)
        return busy or bool(inbox)

    def settle(self) -> None:
        for _ in range(10_000):
            if not self.cycle():
                return
        raise RuntimeError("the cluster did not settle")

    def elect(self, node_id: int) -> RawNode:
        self.settle()  # apply the bootstrap entries
        node = self.nodes[node_id]
        node.campaign()
        self.settle()
        if not node.is_leader():
            raise RuntimeError("election failed")
        return node


def throughput(total: int, batch: int) -> float:
    cluster = Cluster()
    leader = cluster.elect(1)
    start_index = cluster.applied[1]
    target = start_index + total
    items = [PAYLOAD] * batch
    started = time.perf_counter()
    proposed = 0
    while min(cluster.applied.values()) < target:
        if proposed < total and cluster.applied[1] + 4 * batch > start_index + proposed:
            leader.propose_many(items)
            proposed += batch
        cluster.cycle()
    elapsed = time.perf_counter() - started
    return total / elapsed


def latency(samples: int) -> tuple[float, float]:
    cluster = Cluster()
    leader = cluster.elect(1)
    times = []
    for _ in range(samples):
        want = cluster.applied[1] + 1
        started = time.perf_counter()
        leader.propose(PAYLOAD)
        while cluster.applied[1] < want:
            cluster.cycle()
        times.append(time.perf_counter() - started)
        cluster.settle()
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=5_000)
    args = parser.parse_args()
    print(f"throughput: {args.entries} entries in batches of {args.batch}", file=sys.stderr)
    rate = throughput(args.entries, args.batch)
    print(f"latency: {args.samples} single proposals", file=sys.stderr)
    p50, p99 = latency(args.samples)
    print(
        json.dumps(
            {
                "entries_per_s": round(rate),
                "batch": args.batch,
                "p50_us": round(p50, 1),
                "p99_us": round(p99, 1),
                "nodes": 3,
                "payload_bytes": len(PAYLOAD),
            }
        )
    )


if __name__ == "__main__":
    main()
