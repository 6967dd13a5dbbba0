"""Through `copycat.sync` on a real node with LMDB and a plain synchronous provider: a
snapshot taken while the provider runs in the reader's thread describes the reader's
position, so a restart from it holds every acknowledged value exactly once (issue 10:
"after restart: 398 items; missing 2")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parents[2]
LIFE_TIMEOUT_S = 60.0


def _life(data_dir: Path, life: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.sync.snapshot_restart_node", str(data_dir), life],
        capture_output=True,
        text=True,
        timeout=LIFE_TIMEOUT_S,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(f"{life} ")]
    assert lines, result.stdout + result.stderr
    values: list[str] = json.loads(lines[-1].removeprefix(f"{life} "))
    return values


def test_restart_after_a_slow_sync_provider_keeps_every_acknowledged_value(
    tmp_path: pytest.TempPathFactory,
) -> None:
    data_dir = Path(str(tmp_path)) / "node"
    acked = _life(data_dir, "first")
    assert len(acked) > 3
    held = _life(data_dir, "second")
    assert held == [*acked, "end"]
