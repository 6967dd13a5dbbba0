"""Benchmark of the log store's group commit (copycat.storage, LMDB backend).

What it measures, all on the disk holding `--dir`:

* `fsync_per_s`: the disk's raw rate of "write 4 KiB, fsync" in a loop (a growing
  file, as a write-ahead log grows), the ceiling for durable commits of one writer.
  `fdatasync_overwrite_per_s` is printed beside it: the same 4 KiB rewritten in place
  and fdatasync'ed, the cheapest flush the disk offers.
* `entries_per_s["b{N}_g{G}"]`: 100-byte entries made durable per second when the
  host commits batches of N entries spread round-robin over G groups, one
  `LogStore.commit` (one LMDB transaction and its fsyncs) per batch, for N in 1, 64,
  1024 and G in 1, 1000. Entries are built before the clock starts (they come from
  the raft core); the time counted is building the `WriteBatch` and committing it.
* `entries_with_hard_state_per_s`: the same, with each group a batch touches also
  getting its hard state (term, vote, commit) written, as a real host cycle does.

Targets (issue 3): b1 reaches at least 70% of `fsync_per_s`; b1024_g1 at least
300,000 entries/s; b1024_g1000 at least 100,000 entries/s.

Run:  .venv/bin/python benchmarks/storage.py [--dir DIR] [--seconds S]
Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from copycat.raft import Entry, HardState
from copycat.storage import LmdbLogStore, WriteBatch

ENTRY_BYTES = 100
BATCHES = (1, 64, 1024)
GROUPS = (1, 1000)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RawFsync:
    """A loop of 4 KiB writes each followed by a flush, timed in slices so that it can
    be interleaved with the store's runs (the disk's speed drifts on shared hosts)."""

    def __init__(self, directory: Path, *, overwrite: bool) -> None:
        self.overwrite = overwrite
        self.path = directory / ("fsync-overwrite.bin" if overwrite else "fsync-append.bin")
        self.block = os.urandom(4096)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self.fd, self.block)
        os.fsync(self.fd)
        self.count = 0
        self.spent = 0.0

    def run(self, seconds: float) -> None:
        fd, block = self.fd, self.block
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            if self.overwrite:
                os.pwrite(fd, block, 0)
                os.fdatasync(fd)
            else:
                os.write(fd, block)
                os.fsync(fd)
            count += 1
            if count % 16 == 0 and time.perf_counter() >= deadline:
                break
        self.spent += time.perf_counter() - start
        self.count += count

    @property
    def rate(self) -> float:
        return self.count / self.spent

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink()


class Workload:
    """Batches of `batch` entries over `groups` groups committed to a fresh store,
    with or without a hard state per group touched."""

    def __init__(self, directory: Path, batch: int, groups: int, *, hard_state: bool) -> None:
        rng = random.Random(batch * 10_000 + groups)
        self.group_ids = [rng.getrandbits(128) for _ in range(groups)]
        self.last = dict.fromkeys(self.group_ids, 0)
        self.payload = os.urandom(ENTRY_BYTES)
        self.cursor = 0
        self.batch = batch
        self.hard_state = hard_state
        self.entries = 0
        self.commits = 0
        self.spent = 0.0
        self.store = LmdbLogStore(directory, durable=True)
        for _ in range(20):  # warm up: create the groups, grow the file a little
            self.store.commit(self._write(self._make_batch(), hard_state=True))

    def _make_batch(self) -> list[tuple[int, list[Entry], HardState]]:
        counts: dict[int, int] = {}
        group_ids = self.group_ids
        for _ in range(self.batch):
            gid = group_ids[self.cursor]
            counts[gid] = counts.get(gid, 0) + 1
            self.cursor = (self.cursor + 1) % len(group_ids)
        work = []
        for gid, count in counts.items():
            first = self.last[gid] + 1
            self.last[gid] += count
            entries = [
                Entry(term=1, index=i, data=self.payload) for i in range(first, first + count)
            ]
            work.append((gid, entries, HardState(term=1, vote=1, commit=self.last[gid])))
        return work

    @staticmethod
    def _write(work: list[tuple[int, list[Entry], HardState]], *, hard_state: bool) -> WriteBatch:
        write = WriteBatch()
        for gid, entries, state in work:
            write.append(gid, entries)
            if hard_state:
                write.set_hard_state(gid, state)
        return write

    def run(self, seconds: float) -> None:
        spent = 0.0
        wall_deadline = time.perf_counter() + seconds * 2.5
        while spent < seconds and time.perf_counter() < wall_deadline:
            work = self._make_batch()
            start = time.perf_counter()
            self.store.commit(self._write(work, hard_state=self.hard_state))
            spent += time.perf_counter() - start
            self.commits += 1
            self.entries += self.batch
        self.spent += spent

    def close(self) -> None:
        self.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        help="directory on the disk to measure (default: a temporary directory under the current one)",
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="measuring time per figure (default 2)"
    )
    args = parser.parse_args()

    base = Path(args.dir) if args.dir else Path.cwd()
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bench-storage-", dir=base))
    slices = 4
    try:
        raw = RawFsync(work, overwrite=False)
        overwrite = RawFsync(work, overwrite=True)
        overwrite.run(min(args.seconds, 2.0))
        log(f"raw pwrite 4 KiB + fdatasync (in place): {overwrite.rate:,.0f}/s")
        overwrite.close()
        entries_per_s: dict[str, float] = {}
        commits_per_s: dict[str, float] = {}
        with_hard_state: dict[str, float] = {}
        for groups in GROUPS:
            for batch in BATCHES:
                key = f"b{batch}_g{groups}"
                for hard_state in (False, True):
                    workload = Workload(
                        work / f"{key}-{hard_state}", batch, groups, hard_state=hard_state
                    )
                    try:
                        if batch == 1:  # the raw rate is measured beside it, slice by slice
                            for _ in range(slices):
                                raw.run(args.seconds / slices)
                                workload.run(args.seconds / slices)
                        else:
                            workload.run(args.seconds)
                    finally:
                        workload.close()
                    shutil.rmtree(work / f"{key}-{hard_state}")
                    rate = workload.entries / workload.spent
                    if hard_state:
                        with_hard_state[key] = round(rate)
                    else:
                        entries_per_s[key] = round(rate)
                        commits_per_s[key] = round(workload.commits / workload.spent)
                    log(
                        f"{key}{' + hard states' if hard_state else ''}: {rate:,.0f} entries/s "
                        f"in {workload.commits / workload.spent:,.0f} commits/s"
                    )
        fsync_per_s = raw.rate
        log(f"raw write 4 KiB + fsync (appending), interleaved with b1: {fsync_per_s:,.0f}/s")
        raw.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "fsync_per_s": round(fsync_per_s),
        "fdatasync_overwrite_per_s": round(overwrite.rate),
        "entries_per_s": entries_per_s,
        "commits_per_s": commits_per_s,
        "entries_with_hard_state_per_s": with_hard_state,
        "b1_g1_vs_fsync": round(entries_per_s["b1_g1"] / fsync_per_s, 3),
        "b1_g1000_vs_fsync": round(entries_per_s["b1_g1000"] / fsync_per_s, 3),
        "entry_bytes": ENTRY_BYTES,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
