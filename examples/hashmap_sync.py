"""The original README's distributed hashmap with threads and channels (`copycat.sync`).

This is the Go example translated line for line, for programs that do not use asyncio:
a thread stands in for the goroutine that serves the channels, `copycat.sync.select`
for Go's `select`, a lock for the `sync.RWMutex`, and `LOAD_SNAPSHOT` for the nil
value on the commit channel. Where Go sent to `proposeCh` without waiting,
`sub.propose()` blocks until the proposal is committed, and with `wait_delivered=True`
until the serving thread has applied it, so `get` right after `put` sees the write.

Run it:

    python examples/hashmap_sync.py

It starts one node on free loopback ports in a temporary directory, writes and deletes
a few keys, then restarts the node on the same directory: the map comes back from its
snapshot (`LOAD_SNAPSHOT`) and the log after it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading

import copycat
import copycat.sync
from copycat.errors import ClosedError

log = logging.getLogger("hashmap_sync")


class TheMap:
    """type theMap struct { data; mutex; proposeCh; commitCh; errorCh; snapshotConsumer }

    In Python the subscription carries the four: `sub.propose`, `sub.commits`,
    `sub.errors` and `sub.load_snapshot`.
    """

    def __init__(self, cc: copycat.sync.CopyCat) -> None:
        # func newMap(cc copycat.CopyCat) (*theMap, error)
        self.data: dict[str, str] = {}
        self.mutex = threading.Lock()
        self.snapshots_loaded = 0  # not in the original: shown by the demo
        self.sub = cc.subscribe("01CFR5R4JJE9KNRAJFFEAQ2SAJ", self.snapshot_provider)
        self.serving = threading.Thread(target=self.serve_channels, name="serve_channels")
        self.serving.start()  # go m.serveChannels()

    def get(self, key: str) -> str:
        # nothing fancy here
        with self.mutex:
            return self.data.get(key, "")

    def put(self, key: str, value: str) -> None:
        # take key and value and create an operation, marshal it into bytes
        item = json.dumps({"key": key, "value": value}).encode()
        # send the bytes to the propose channel; returns once committed and applied by
        # serve_channels (not in the original: a get() right after sees it)
        self.sub.propose(item, wait_delivered=True)

    def delete(self, key: str) -> None:
        self.put(key, "")  # an empty value means "delete", as in the original

    def serve_channels(self) -> None:
        while True:
            try:
                channel, data = copycat.sync.select(self.sub.commits, self.sub.errors)
            except ClosedError:
                return  # the subscription was closed: `if !ok { return }`

            if channel is self.sub.errors:
                log.error("ran into error: %s", data)
            elif data is copycat.LOAD_SNAPSHOT:
                # the committed entry is LOAD_SNAPSHOT (nil in Go): reload the data
                # structure from a consistent snapshot
                bites = self.sub.load_snapshot()
                # deserialize the bytes and set the internal structure to the new state
                tc_data = json.loads(bites) if bites else {}
                with self.mutex:
                    self.data = tc_data
                    self.snapshots_loaded += 1
            elif isinstance(data, bytes):
                # data contains a valid operation: unmarshal it
                try:
                    new_op = json.loads(data)
                    key, value = str(new_op["key"]), str(new_op["value"])
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("can't unmarshal operation: %s", exc)
                    continue
                # apply operation
                with self.mutex:
                    if value == "":
                        # empty value means "delete"
                        self.data.pop(key, None)
                    else:
                        # non-empty value means "set"
                        self.data[key] = value

    def snapshot_provider(self) -> bytes:
        # take the current state and marshal it into bytes; CopyCat runs this in the
        # serve_channels thread, between two commits
        with self.mutex:
            return json.dumps(self.data, sort_keys=True).encode()

    # -- not in the original ----------------------------------------------------------------

    def sync(self, timeout: float) -> bool:
        """A read barrier: True once serve_channels applied every write committed before
        the call (on any node), False if that took longer than `timeout` s."""
        try:
            self.sub.read_barrier(timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sub.close()
        self.serving.join(timeout=10)


def run_node(data_dir: str, *, first_run: bool) -> None:
    """One life of a single-node cluster on `data_dir`."""
    ccc = copycat.Config.local(
        data_dir=data_dir,
        # port=0 and gossip_port=0: the OS picks free ports. A node joining an existing
        # cluster lists another node's gossip address, e.g.
        # peers_to_contact=["127.0.0.1:17459", "127.0.0.1:27459"]
        port=0,
        gossip_port=0,
        peers_to_contact=[],  # empty: start a new cluster
        node_id=1,
        snapshot_every_entries=4,  # snapshot often, to show LOAD_SNAPSHOT on restart
    )
    with copycat.sync.CopyCat(ccc) as cc:
        print(f"node started, data dir {data_dir}")
        the_map = TheMap(cc)
        try:
            if first_run:
                for key, value in [("hello", "world"), ("lang", "python"), ("cat", "copy")]:
                    the_map.put(key, value)
                    print(f"put {key}={value} -> get({key!r}) = {the_map.get(key)!r}")
                the_map.delete("lang")
                print(f"delete lang -> get('lang') = {the_map.get('lang')!r}")
                for i in range(6):
                    the_map.put(f"k{i}", str(i * i))
                print(f"put k0..k5; the map holds {len(the_map.data)} keys")
            else:
                # serve_channels loads the snapshot, then applies the entries after it
                caught_up = the_map.sync(timeout=30)
                print(f"reloaded from snapshot: {the_map.snapshots_loaded > 0}")
                print(f"after restart (caught up: {caught_up}): hello={the_map.get('hello')!r}")
                print(
                    f"after restart the map holds {len(the_map.data)} keys: {sorted(the_map.data)}"
                )
        finally:
            the_map.close()
    print(f"node stopped ({'first run' if first_run else 'second run'})")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="copycat-hashmap-sync-") as data_dir:
        run_node(data_dir, first_run=True)
        print("restarting the node on the same data dir")
        run_node(data_dir, first_run=False)
    print("done")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    main()
