"""Through `copycat.sync` on a real node with LMDB and a plain synchronous provider: a
snapshot taken while the provider runs in the reader's thread describes the reader's
position, so a restart from it holds every acknowledged value exactly once (issue 10:
"after restart: 398 items; missing 2")."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.sync._subprocess import run_life

if TYPE_CHECKING:
    import pytest


def _life(data_dir: Path, life: str) -> list[str]:
    values: list[str] = run_life("tests.sync.snapshot_restart_node", str(data_dir), life, tag=life)
    return values


def test_restart_after_a_slow_sync_provider_keeps_every_acknowledged_value(
    tmp_path: pytest.TempPathFactory,
) -> None:
    data_dir = Path(str(tmp_path)) / "node"
    acked = _life(data_dir, "first")
    assert len(acked) > 3
    held = _life(data_dir, "second")
    assert held == [*acked, "end"]
