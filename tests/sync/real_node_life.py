"""One real single-node `copycat.sync.CopyCat` (LMDB, loopback, ports 0), run twice on one
data dir by test_sync_real_node.py; not collected by pytest (no test_ prefix).

    python -m tests.sync.real_node_life DATA_DIR first
    python -m tests.sync.real_node_life DATA_DIR second DS_ID

first: subscribes to a new id with a snapshot provider; two proposer threads propose
`a0..` and `b0..`; a reader thread takes `commits` in order. Snapshots are taken every
few entries (`snapshot_every_entries`), and the life waits (bounded) until the provider
ran at least once. Then `close()` of the subscription must end the reader's loop.
second: reopens the same dir, subscribes to the same id, reloads on LOAD_SNAPSHOT with
`load_snapshot()`, applies what follows, proposes `c0..c2` and closes the subscription.

Each life prints one line `result <json>` that the test checks. Every wait is bounded.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import TYPE_CHECKING

import copycat
import copycat.sync
from copycat.errors import ClosedError
from tests.sync._subprocess import main_then_exit

if TYPE_CHECKING:
    from collections.abc import Callable

WAIT_S = 20.0
PER_PROPOSER = 8
LATER = ("c0", "c1", "c2")


def _config(data_dir: str, snapshot_every_entries: int = 5) -> copycat.Config:
    return copycat.Config.local(
        data_dir=data_dir,
        peers_to_contact=[],
        hostname="127.0.0.1",
        node_id=1,
        snapshot_every_entries=snapshot_every_entries,
        snapshot_keep_entries=0,
    )


SENTINEL = "sentinel"
"""Proposed once the provider has run (see `first`)."""


class Reader:
    """Applies a subscription's commits in a thread of its own; its `state` is what the
    snapshot provider returns (the provider runs in this same thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.state: list[str] = []
        self.events: list[str] = []  # "load" per LOAD_SNAPSHOT, "commit" per value
        self.provider_calls = 0
        self.ended = threading.Event()
        self.error: str | None = None
        self.thread: threading.Thread | None = None

    def provider(self) -> bytes:
        with self.lock:
            self.provider_calls += 1
            self.changed.notify_all()
            return json.dumps(self.state).encode()

    def start(self, sub: copycat.sync.Subscription) -> None:
        def read() -> None:
            try:
                for item in sub.commits:
                    if item is copycat.LOAD_SNAPSHOT:
                        loaded = json.loads(sub.load_snapshot(timeout=WAIT_S))
                        with self.lock:
                            self.state[:] = loaded
                            self.events.append("load")
                            self.changed.notify_all()
                        continue
                    assert isinstance(item, bytes), item
                    with self.lock:
                        self.state.append(item.decode())
                        self.events.append("commit")
                        self.changed.notify_all()
            except BaseException as exc:
                self.error = repr(exc)
            finally:
                self.ended.set()

        self.thread = threading.Thread(target=read, name="reader", daemon=True)
        self.thread.start()

    def wait_for(self, predicate: Callable[[], bool]) -> bool:
        with self.lock:
            return self.changed.wait_for(predicate, WAIT_S)


def first(data_dir: str) -> dict[str, object]:
    reader = Reader()
    acked: dict[str, list[str]] = {"a": [], "b": []}
    failures: list[str] = []
    with copycat.sync.CopyCat(_config(data_dir)) as cc:
        ds_id = cc.new_data_structure_id()
        sub = cc.subscribe(ds_id, reader.provider)
        reader.start(sub)

        def propose(prefix: str) -> None:
            try:
                for i in range(PER_PROPOSER):
                    value = f"{prefix}{i}"
                    sub.propose(value.encode(), timeout=WAIT_S)
                    acked[prefix].append(value)
            except BaseException as exc:
                failures.append(f"{prefix}: {exc!r}")

        proposers = [
            threading.Thread(target=propose, args=(p,), name=f"proposer {p}") for p in acked
        ]
        for thread in proposers:
            thread.start()
        for thread in proposers:
            thread.join(WAIT_S * PER_PROPOSER)
        total = sum(len(v) for v in acked.values())
        applied_all = reader.wait_for(lambda: len(reader.state) >= total)
        snapshotted = reader.wait_for(lambda: reader.provider_calls > 0)
        # The provider having run is not the snapshot being recorded (that follows on the
        # node's loop): the feed hands out nothing after a provider call before it has
        # recorded that snapshot, so one more value seen here means it is on disk.
        sub.propose(SENTINEL.encode(), timeout=WAIT_S)
        applied_all = applied_all and reader.wait_for(lambda: SENTINEL in reader.state)
        with reader.lock:
            commits = list(reader.state)
            provider_calls = reader.provider_calls
        sub.close(timeout=WAIT_S)
        ended = reader.ended.wait(WAIT_S)
    return {
        "ds_id": str(ds_id),
        "acked": acked,
        "failures": failures,
        "applied_all": applied_all,
        "snapshotted": snapshotted,
        "provider_calls": provider_calls,
        "commits": commits,
        "channel_ended": ended,
        "reader_error": reader.error,
    }


def second(data_dir: str, ds_id: str) -> dict[str, object]:
    reader = Reader()
    # Snapshots every 2 entries here too: the later values are snapshotted under the
    # reader while it applies them.
    with copycat.sync.CopyCat(_config(data_dir, snapshot_every_entries=2)) as cc:
        sub = cc.subscribe(ds_id, reader.provider)
        reader.start(sub)
        for value in LATER:
            sub.propose(value.encode(), timeout=WAIT_S)
        applied_all = reader.wait_for(lambda: reader.state[-1:] == [LATER[-1]])
        with reader.lock:
            state = list(reader.state)
            events = list(reader.events)
        sub.close(timeout=WAIT_S)
        ended = reader.ended.wait(WAIT_S)
        try:
            sub.propose(b"after close", timeout=WAIT_S)
            propose_after_close = "accepted"
        except ClosedError:
            propose_after_close = "ClosedError"
    return {
        "applied_all": applied_all,
        "state": state,
        "events": events,
        "channel_ended": ended,
        "reader_error": reader.error,
        "propose_after_close": propose_after_close,
    }


def main() -> None:
    data_dir, life = sys.argv[1], sys.argv[2]
    result = first(data_dir) if life == "first" else second(data_dir, sys.argv[3])
    print("result", json.dumps(result), flush=True)


if __name__ == "__main__":
    main_then_exit(main)
