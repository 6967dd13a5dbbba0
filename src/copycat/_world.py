# Where a node reaches outside its event loop: the seam the simulator replaces.
#
# What lives here: `World`, the node's sources of randomness and wall-clock time and the
# factories of its log store, transport and gossip layer. `CopyCat(config)` uses the real
# ones; `copycat.testing.sim` passes simulated ones, so a whole cluster runs on one event
# loop with a virtual clock, an in-memory network and a disk that loses unsynced writes.
#
# What must not: behaviour of its own. Everything else a node needs from outside (timers,
# sleeps) goes through the event loop, whose clock the simulator owns already.
"""`World`: the node's randomness, wall clock, log store, transport and gossip."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from copycat._config import Config
    from copycat.membership import MembershipConfig
    from copycat.membership._gossip import Gossip
    from copycat.storage import LogStore
    from copycat.transport import Transport, TransportConfig


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class World:
    """A node's contact with the outside. Every field defaults to the real thing."""

    random_bytes: Callable[[int], bytes] = os.urandom
    """Session ids, group incarnations, gossip request ids."""
    wall_ms: Callable[[], int] = _wall_ms
    """Milliseconds since the epoch: only for incarnations (ordered across nodes)."""
    log_store: Callable[[Config], LogStore] | None = None
    """Opens the node's log store; None: `config.open_log_store()` (LMDB or memory)."""
    transport: Callable[[TransportConfig], Transport] | None = None
    """Builds the node's transport; None: a TCP `Endpoint`."""
    gossip: Callable[[MembershipConfig, Mapping[str, str]], Gossip] | None = None
    """Builds the gossip layer; None: kinship (SWIM over UDP and TCP)."""


REAL_WORLD = World()
