"""The `procs` fixture: a cluster of node processes, every one killed at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .cluster import ProcessCluster

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessCluster]:
    cluster = ProcessCluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()
