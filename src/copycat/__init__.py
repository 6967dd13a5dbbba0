"""CopyCat: replicate a program's own data structures across nodes and data centers,
in order and exactly once.

The public API (CopyCat, Config, Subscription) arrives with the node; today the package
offers its layers: `copycat.raft` (the consensus core) and `copycat.errors`.
"""

from __future__ import annotations

from copycat._version import __version__ as __version__

__all__ = ["__version__"]
