"""`python -m copycat.testing.sim --seeds N` (or `--seed K --trace`): whole-cluster runs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from copycat.testing.sim._cluster import Bugs, Options, Simulation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m copycat.testing.sim")
    parser.add_argument("--seeds", type=int, default=10, help="run N seeds, from --first on")
    parser.add_argument("--first", type=int, default=1, help="the first seed (default 1)")
    parser.add_argument("--stop", action="store_true", help="stop at the first failing seed")
    parser.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument("--nodes", type=int, default=5, help="nodes at the start")
    parser.add_argument("--joins", type=int, default=1, help="nodes that join during faults")
    parser.add_argument("--fault-s", type=float, default=40.0, help="simulated seconds of faults")
    parser.add_argument("--no-faults", action="store_true", help="the workload alone")
    parser.add_argument("--trace", action="store_true", help="print the event trace")
    parser.add_argument("--debug", action="store_true", help="debug log lines in the trace")
    parser.add_argument("--bug", action="append", default=[], choices=["no_fsync"])
    args = parser.parse_args(argv)
    seeds = (
        [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    )
    bugs = Bugs(**{name: True for name in args.bug})
    totals = dict.fromkeys(
        (
            "proposals_ok",
            "delivered",
            "crashes",
            "partitions",
            "pauses",
            "snapshots",
            "repairs",
            "joins",
            "leaves",
            "cluster_restarts",
            "gossip_cuts",
        ),
        0,
    )
    failing: list[int] = []
    simulated = 0.0
    began = time.perf_counter()
    ran = 0
    for seed in seeds:
        ran += 1
        sim = Simulation(
            seed,
            Options(
                nodes=args.nodes,
                joins=args.joins,
                fault_s=args.fault_s,
                bugs=bugs,
                faults=not args.no_faults,
                log_level=logging.DEBUG if args.debug else logging.INFO,
            ),
        )
        result = sim.run()
        simulated += sim.simulated_s
        for key in totals:
            totals[key] += result[key]
        if args.trace:
            print("\n".join(sim.lines))
        if result["violations"]:
            failing.append(seed)
            print(
                f"seed {seed}: {len(result['violations'])} violations; replay with --seed {seed} --trace"
            )
            for text in result["violations"][:5]:
                print(f"  {text}")
            if args.stop:
                break
    elapsed = time.perf_counter() - began
    summary = {
        "seeds": ran,
        "violations": len(failing),
        "failing_seeds": failing[:20],
        **totals,
        "simulated_s": round(simulated, 1),
        "elapsed_s": round(elapsed, 2),
        "simulated_s_per_wall_s": round(simulated / elapsed, 1) if elapsed else 0.0,
    }
    print(json.dumps(summary))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
