"""Test support that ships with CopyCat: the deterministic raft simulator
(`copycat.testing.raftsim`). Public and documented, so that users can replay a seed."""

from __future__ import annotations
