# Tests of the `copycat` command line (src/copycat/cli/).
from __future__ import annotations
