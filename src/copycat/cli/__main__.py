# `python -m copycat.cli`: the same as the `copycat` script.
#
# What lives here: the call to `main()` only.
"""Run the `copycat` command line."""

from __future__ import annotations

from copycat.cli import main

raise SystemExit(main())
