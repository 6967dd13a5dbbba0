"""Deterministic whole-cluster simulation (see docs/testing.md)."""
