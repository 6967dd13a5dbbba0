"""Speed of the whole-cluster simulator: simulated seconds per wall second, and wall
seconds per 60 simulated seconds of a 5-node cluster under faults.

Run: .venv/bin/python benchmarks/sim.py [--seeds N]   (default 5 seeds, one core; run
it on an idle machine: a busy second core slows it by a third)
Last line: {"seeds", "simulated_s", "wall_s", "simulated_s_per_wall_s",
"wall_s_per_60_simulated_s", "slowest_seed", "slowest_wall_s_per_60_simulated_s",
"violations"}: the overall rate, and the slowest seed's.
"""

from __future__ import annotations

import argparse
import json
import time

from copycat.testing.sim import Options, Simulation


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    simulated = 0.0
    violations = 0
    slowest = (0.0, 0)
    began = time.perf_counter()
    for seed in range(1, args.seeds + 1):
        start = time.perf_counter()
        sim = Simulation(seed, Options(nodes=5, fault_s=40.0))
        violations += bool(sim.run()["violations"])
        simulated += sim.simulated_s
        slowest = max(slowest, (60.0 * (time.perf_counter() - start) / sim.simulated_s, seed))
    wall = time.perf_counter() - began
    print(
        json.dumps(
            {
                "seeds": args.seeds,
                "simulated_s": round(simulated, 1),
                "wall_s": round(wall, 2),
                "simulated_s_per_wall_s": round(simulated / wall, 1),
                "wall_s_per_60_simulated_s": round(60.0 * wall / simulated, 2),
                "slowest_seed": slowest[1],
                "slowest_wall_s_per_60_simulated_s": round(slowest[0], 2),
                "violations": violations,
            }
        )
    )


if __name__ == "__main__":
    main()
