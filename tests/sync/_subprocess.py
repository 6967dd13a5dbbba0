"""Running a real node in a subprocess, one "life" at a time, for the sync tests.

The scripts (real_node_life.py, snapshot_restart_node.py) run a real node through
`copycat.sync` in their own process (kinship 0.4 may crash at interpreter teardown, so
they end with `os._exit`) and print one `TAG <json>` line; `run_life` runs one and
returns that JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[2]
LIFE_TIMEOUT_S = 60.0


def run_life(module: str, *args: str, tag: str) -> Any:
    """Run `python -m module *args` from the repository root (bounded) and return the
    JSON of its last line that starts with `tag`."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=LIFE_TIMEOUT_S,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(f"{tag} ")]
    assert lines, result.stdout + result.stderr
    return json.loads(lines[-1].removeprefix(f"{tag} "))


def main_then_exit(main: Callable[[], None]) -> NoReturn:
    """Run a script's `main`, print any failure, flush, and exit with its code."""
    code = 0
    try:
        main()
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
