"""Tests of `copycat.storage`: the node's log store and snapshot files."""

from __future__ import annotations
