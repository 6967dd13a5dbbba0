"""Deterministic whole-cluster simulation: real `CopyCat` nodes on one event loop with a
virtual clock, over a simulated network, gossip and disk, under a seeded nemesis, judged
by a checker at the user's level. See docs/testing.md.

    python -m copycat.testing.sim --seeds 200
    python -m copycat.testing.sim --seed 17 --trace
"""

from __future__ import annotations

from copycat.testing.sim._check import Checker as Checker
from copycat.testing.sim._check import Recorder as Recorder
from copycat.testing.sim._cluster import Bugs as Bugs
from copycat.testing.sim._cluster import Options as Options
from copycat.testing.sim._cluster import Simulation as Simulation
from copycat.testing.sim._program import CheckedCopyCat as CheckedCopyCat
from copycat.testing.sim._program import Program as Program
from copycat.testing.sim._program import SimNode as SimNode
from copycat.testing.sim._program import unique_values as unique_values

__all__ = [
    "Bugs",
    "CheckedCopyCat",
    "Checker",
    "Options",
    "Program",
    "Recorder",
    "SimNode",
    "Simulation",
    "unique_values",
]
