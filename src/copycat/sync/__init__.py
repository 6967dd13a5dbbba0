# The thread facade: CopyCat for programs without asyncio.
#
# What lives here: re-exports only. `CopyCat` and `Subscription` (blocking calls with
# timeouts), `Channel` and `select` (Go-style bounded channels), and the Protocols of
# the async node the facade drives (`AsyncNode`, `AsyncSubscription`).
#
# What must not: replication logic, or an import of `copycat.CopyCat` at import time
# (the facade looks it up when it starts).
"""CopyCat with threads and blocking, queue-like channels, for programs without asyncio.

One asyncio event loop runs the node in a background daemon thread; every operation is
a blocking call with an optional `timeout`, and a subscription's commits and errors
arrive on bounded `Channel`s. The queries of `copycat.CopyCat` have the same names and
results (`node_id`, `address`, `gossip_address`, `members()`, `groups()`,
`counters()`, `http_address`, `metrics()`, `status()`, `readiness()`,
`metric_counters()`), and misuse raises the same `copycat.errors` types.

The original Go README's hashmap translates line for line, a thread standing in for the
goroutine and `select` for Go's `select`::

    import json, threading
    import copycat, copycat.sync
    from copycat.errors import ClosedError

    class TheMap:
        def __init__(self, cc: copycat.sync.CopyCat) -> None:
            self.data: dict[str, str] = {}
            self.lock = threading.Lock()
            self.sub = cc.subscribe("01CFR5R4JJE9KNRAJFFEAQ2SAJ", self.snapshot_provider)
            threading.Thread(target=self.serve_channels, daemon=True).start()

        def get(self, key: str) -> str:
            with self.lock:
                return self.data.get(key, "")

        def put(self, key: str, value: str) -> None:
            self.sub.propose(json.dumps([key, value]).encode())  # returns once committed

        def serve_channels(self) -> None:
            while True:
                try:
                    channel, item = copycat.sync.select(self.sub.commits, self.sub.errors)
                except ClosedError:
                    return  # the subscription was closed
                if channel is self.sub.errors:
                    print("ran into error:", item)
                elif item is copycat.LOAD_SNAPSHOT:
                    state = json.loads(self.sub.load_snapshot())
                    with self.lock:
                        self.data = state
                else:
                    key, value = json.loads(item)
                    with self.lock:
                        if value == "":
                            self.data.pop(key, None)  # empty value means delete
                        else:
                            self.data[key] = value

        def snapshot_provider(self) -> bytes:
            with self.lock:
                return json.dumps(self.data).encode()

    with copycat.sync.CopyCat(copycat.Config()) as cc:
        the_map = TheMap(cc)
        the_map.put("hello", "world")

The snapshot provider runs in the thread that reads `commits` (`serve_channels` here),
between two items, so it sees exactly the state the items before it built.
"""

from __future__ import annotations

from copycat.sync._channel import DEFAULT_CAPACITY as DEFAULT_CAPACITY
from copycat.sync._channel import Channel as Channel
from copycat.sync._channel import select as select
from copycat.sync._facade import DEFAULT_ERROR_CAPACITY as DEFAULT_ERROR_CAPACITY
from copycat.sync._facade import DEFAULT_QUERY_TIMEOUT_S as DEFAULT_QUERY_TIMEOUT_S
from copycat.sync._facade import DEFAULT_SHUTDOWN_TIMEOUT_S as DEFAULT_SHUTDOWN_TIMEOUT_S
from copycat.sync._facade import CopyCat as CopyCat
from copycat.sync._facade import Subscription as Subscription
from copycat.sync._protocols import AsyncNode as AsyncNode
from copycat.sync._protocols import AsyncSubscription as AsyncSubscription

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_ERROR_CAPACITY",
    "DEFAULT_QUERY_TIMEOUT_S",
    "DEFAULT_SHUTDOWN_TIMEOUT_S",
    "AsyncNode",
    "AsyncSubscription",
    "Channel",
    "CopyCat",
    "Subscription",
    "select",
]
