"""Membership benchmark: failure detection, join and directory convergence on loopback.

What it measures, with N membership nodes, one per process (`copycat.membership._agent`),
on 127.0.0.1 with kinship's `local` preset (probe every 200 ms):

* `join_s`: from starting the process of a new node to every other node seeing it live
  (includes Python start-up); `join_from_ready_s` counts from the node's own start instead.
* `detect_s`: from `kill -9` of a node to every live node reporting it failed; the median
  of 3 runs (the victim is restarted on its port between runs).
* `directory_converge_s`: from one node publishing 1,000 new groups to every other node
  locating all 1,000 of them; `directory_role_change_s` likewise for 1,000 role changes,
  with the directory bytes each node received for it (`role_change_bytes_per_node`).

Targets (local preset): detect_s < 3, join_s < 1, directory_converge_s < 2.

Run:  .venv/bin/python benchmarks/membership.py [--nodes 10]
Progress goes to stderr; the last line of stdout is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from copycat.membership._agent import AgentProcess

SAFETY_S = 30.0


def progress(message: str) -> None:
    print(f"[membership bench] {message}", file=sys.stderr, flush=True)


async def wait_members(agents: list[AgentProcess], nodes: list[int]) -> list[float]:
    results = await asyncio.gather(
        *(
            a.call("wait_members", nodes=nodes, timeout=SAFETY_S, timeout_s=SAFETY_S + 5)
            for a in agents
        )
    )
    for agent, result in zip(agents, results, strict=True):
        if result["members"] != sorted(nodes):  # type: ignore[index]
            raise RuntimeError(f"node {agent.node_id} sees {result}")
    return [float(r["at"]) for r in results]  # type: ignore[index]


async def failed_at(agent: AgentProcess, node: int, epoch_after: float) -> float:
    events = await agent.call("events")
    times = [e[0] for e in events if e[1] == "failed" and e[2] == node and e[0] >= epoch_after]  # type: ignore[union-attr]
    if not times:
        raise RuntimeError(f"node {agent.node_id} never reported node {node} failed")
    return float(min(times))


async def located_at(agents: list[AgentProcess], role: str) -> list[float]:
    results = await asyncio.gather(
        *(
            a.call(
                "wait_located",
                node=1,
                prefix="g",
                count=1000,
                role=role,
                timeout=SAFETY_S,
                timeout_s=SAFETY_S + 5,
            )
            for a in agents
        )
    )
    for agent, result in zip(agents, results, strict=True):
        if result["found"] != 1000:  # type: ignore[index]
            raise RuntimeError(f"node {agent.node_id} located {result}")
    return [float(r["at"]) for r in results]  # type: ignore[index]


async def bytes_received(agents: list[AgentProcess]) -> list[int]:
    out = []
    for agent in agents:
        status = await agent.call("status")
        out.append(int(status["counters"]["sync_bytes_received"]))  # type: ignore[index]
    return out


async def run(nodes: int) -> dict[str, object]:
    agents: list[AgentProcess] = []
    try:
        progress(f"starting {nodes - 1} nodes")
        first = await AgentProcess.spawn("--node-id", "1", "--cluster", "bench")
        agents.append(first)
        for i in range(2, nodes):
            # One at a time, so that the `finally` below kills every process started so far.
            agents.append(  # noqa: PERF401
                await AgentProcess.spawn(
                    "--node-id", str(i), "--cluster", "bench", "--peer", first.gossip_address
                )
            )
        await wait_members(agents, list(range(1, nodes)))

        progress(f"joining node {nodes}")
        started = time.time()
        newcomer = await AgentProcess.spawn(
            "--node-id", str(nodes), "--cluster", "bench", "--peer", first.gossip_address
        )
        ready = time.time()
        agents.append(newcomer)
        seen = await wait_members(agents[:-1], list(range(1, nodes + 1)))
        join_s = max(seen) - started
        join_from_ready_s = max(seen) - ready
        progress(f"join_s={join_s:.3f} (from ready {join_from_ready_s:.3f})")

        progress("publishing 1,000 groups on node 1")
        published = await first.call("publish", prefix="g", count=1000)
        converge_s = max(await located_at(agents[1:], "voter")) - float(published["at"])  # type: ignore[index]
        await asyncio.sleep(0.5)
        before = await bytes_received(agents[1:])
        changed = await first.call("publish", prefix="g", count=1000, role="learner")
        role_s = max(await located_at(agents[1:], "learner")) - float(changed["at"])  # type: ignore[index]
        await asyncio.sleep(0.5)
        after = await bytes_received(agents[1:])
        role_bytes = statistics.median(a - b for a, b in zip(after, before, strict=True))
        progress(f"directory_converge_s={converge_s:.3f} role_change_s={role_s:.3f}")

        detections: list[float] = []
        for run_index in range(3):
            victim = agents[-1 - run_index]
            port = victim.gossip_address.rpartition(":")[2]
            live = [a for a in agents if a is not victim]
            killed = time.time()
            await victim.kill()
            await wait_members(live, sorted(a.node_id for a in live))
            detect = max([await failed_at(a, victim.node_id, killed) for a in live]) - killed
            detections.append(detect)
            progress(f"detect run {run_index + 1}: node {victim.node_id} in {detect:.3f} s")
            reborn = await AgentProcess.spawn(
                "--node-id",
                str(victim.node_id),
                "--cluster",
                "bench",
                "--port",
                port,
                "--peer",
                first.gossip_address,
            )
            agents[agents.index(victim)] = reborn
            await wait_members(agents, list(range(1, nodes + 1)))

        return {
            "members": nodes,
            "preset": "local",
            "detect_s": round(statistics.median(detections), 3),
            "detect_runs_s": [round(d, 3) for d in detections],
            "join_s": round(join_s, 3),
            "join_from_ready_s": round(join_from_ready_s, 3),
            "directory_converge_s": round(converge_s, 3),
            "directory_role_change_s": round(role_s, 3),
            "role_change_bytes_per_node": int(role_bytes),
        }
    finally:
        await asyncio.gather(*(a.kill() for a in agents), return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10, help="processes to run (default 10)")
    args = parser.parse_args()
    if args.nodes < 3:
        parser.error("--nodes must be at least 3")
    result = asyncio.run(run(args.nodes))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
