"""One real node through `copycat.sync` (LMDB), run twice on one data dir by
test_sync_snapshot_restart.py; not collected by pytest (no test_ prefix).

    python -m tests.sync.snapshot_restart_node DATA_DIR first|second

first: a reader thread applies commits; the snapshot provider (a plain synchronous
function, run by the facade in the reader's thread) holds the reader while three more
values commit, then returns the state it has. Prints `first <json list acknowledged>`.
second: restarts on the same dir, reloads LOAD_SNAPSHOT, applies what follows up to a
final b"end" and prints `second <json list held>`.
Every wait is bounded.
"""

from __future__ import annotations

import json
import sys
import threading

import copycat
import copycat.sync
from tests.sync._subprocess import main_then_exit

DS_ID = "01CFR5R4JJE9KNRAJFFEAQ2SAJ"
WAIT_S = 20.0


def _config(data_dir: str) -> copycat.Config:
    return copycat.Config.local(
        data_dir=data_dir,
        peers_to_contact=[],
        node_id=1,
        snapshot_every_entries=5,
        snapshot_keep_entries=0,
    )


def first(data_dir: str) -> list[str]:
    state: list[str] = []
    lock = threading.Lock()
    provider_called = threading.Event()
    more_committed = threading.Event()
    done = threading.Event()
    acked: list[str] = []

    def provider() -> bytes:
        if not provider_called.is_set():
            provider_called.set()
            # Holds the reader, as a slow provider does, while more values commit.
            more_committed.wait(WAIT_S)
        with lock:
            return json.dumps(state).encode()

    with copycat.sync.CopyCat(_config(data_dir)) as cc:
        sub = cc.subscribe(DS_ID, provider)

        def read() -> None:
            for item in sub.commits:
                assert isinstance(item, bytes), item
                with lock:
                    state.append(item.decode())
                    if len(state) == len(acked) and provider_called.is_set():
                        done.set()

        reader = threading.Thread(target=read, name="reader", daemon=True)
        reader.start()
        while not provider_called.is_set() and len(acked) < 50:
            value = f"v{len(acked)}"
            sub.propose(value.encode(), timeout=WAIT_S)
            acked.append(value)
            provider_called.wait(0.05)
        for _ in range(3):
            value = f"v{len(acked)}"
            sub.propose(value.encode(), timeout=WAIT_S)
            acked.append(value)
        more_committed.set()
        done.wait(WAIT_S)
        sub.close(timeout=WAIT_S)
    return acked


def second(data_dir: str) -> list[str]:
    state: list[str] = []
    finished = threading.Event()
    with copycat.sync.CopyCat(_config(data_dir)) as cc:
        sub = cc.subscribe(DS_ID, lambda: json.dumps(state).encode())

        def read() -> None:
            for item in sub.commits:
                if item is copycat.LOAD_SNAPSHOT:
                    state[:] = json.loads(sub.load_snapshot(timeout=WAIT_S))
                    continue
                assert isinstance(item, bytes), item
                state.append(item.decode())
                if item == b"end":
                    finished.set()
                    return

        reader = threading.Thread(target=read, name="reader", daemon=True)
        reader.start()
        sub.propose(b"end", timeout=WAIT_S)
        finished.wait(WAIT_S)
        sub.close(timeout=WAIT_S)
    return state


def main() -> None:
    data_dir, life = sys.argv[1], sys.argv[2]
    result = first(data_dir) if life == "first" else second(data_dir)
    print(life, json.dumps(result), flush=True)


if __name__ == "__main__":
    main_then_exit(main)
