# Address helpers shared by the layers that bind or check network addresses: the
# transport, the membership and the node's configuration.
#
# What lives here: pure functions over host names and IP literals. A leaf, like
# `_ids.py` and `errors.py`: it imports nothing from CopyCat's layers.
#
# What must not: sockets, name resolution, or any other I/O.
"""Pure helpers over network addresses (no resolution, no sockets)."""

from __future__ import annotations

import ipaddress
from typing import Final

__all__: Final = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether `host` names the loopback interface (an IP literal or "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
