"""Fixtures of the storage tests: a store of each backend, reopenable."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .helpers import StoreHandle

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from copycat.storage import LogStore


@pytest.fixture(params=["lmdb", "memory"])
def handle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreHandle]:
    h = StoreHandle(request.param, tmp_path / "node")
    yield h
    h.close()


@pytest.fixture
def store(handle: StoreHandle) -> LogStore:
    return handle.store
