# The `copycat` command line (`copycat demo`, `copycat node`, `copycat status`).
#
# What lives here: re-exports only; `main` is in `_main.py`. The demo's hashmap, its
# node processes (`_worker.py`), the node runner (`_runtime.py`) and the status file
# (`_status.py`) are private to this package.
#
# What must not: be imported by the library's layers (this package sits above them all).
"""The `copycat` command line. `main(argv) -> int`; see docs/cli.md."""

from __future__ import annotations

from typing import Final

from copycat.cli._main import main as main

__all__: Final = ["main"]
