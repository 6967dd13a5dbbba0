"""Kill -9 during group commits: every reported batch survives whole, none in part.

A child process (`crash_child.py`) appends batches spanning many groups to an LMDB
store and reports each batch id after `commit` returns. We SIGKILL it at random
moments, reopen the store, and check: every reported batch is present whole; no batch
is present in part; every group's indexes are contiguous from 1; each group's hard
state (written in the same batch) matches its log. Only the child we started is killed.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from copycat.storage import LmdbLogStore

from .crash_child import batch_plan, parse_entry_data

CHILD = Path(__file__).with_name("crash_child.py")
KILLS = 32
SEED = 20240611


def spawn(data_dir: Path, first_batch: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir), str(first_batch), str(SEED)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


class Checker:
    """What the parent knows: which batches were reported, and what it verified."""

    def __init__(self) -> None:
        self.verified_last: dict[int, int] = defaultdict(int)
        self.seen: set[int] = set()
        self.reported: set[int] = set()
        self.last_batch_of: dict[int, int] = defaultdict(lambda: -1)

    def verify(self, data_dir: Path) -> None:
        """Reopen the store and check the log tail written since the last check."""
        parts: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
        with LmdbLogStore(data_dir) as store:
            for gid in store.groups():
                log = store.group(gid)
                last = log.last_index()
                assert log.first_index() == 1
                assert log.initial_state()[0].commit == last, f"group {gid}: hard state torn"
                new = log.entries(self.verified_last[gid] + 1, last + 1)
                for expected_index, entry in enumerate(new, self.verified_last[gid] + 1):
                    assert entry.index == expected_index
                    batch, group, position, count = parse_entry_data(entry.data)
                    assert group == gid
                    assert batch >= self.last_batch_of[gid], "batches out of order"
                    self.last_batch_of[gid] = batch
                    assert batch not in self.seen, f"batch {batch} grew after it was checked"
                    parts[batch][gid].add(position)
                self.verified_last[gid] = last
        for batch, groups in parts.items():
            plan = dict(batch_plan(SEED, batch))
            assert set(groups) == set(plan), f"batch {batch} is present in part: {dict(groups)}"
            for gid, count in plan.items():
                assert groups[gid] == set(range(count)), f"batch {batch} torn in group {gid}"
        self.seen.update(parts)
        missing = self.reported - self.seen
        assert not missing, f"reported batches lost: {sorted(missing)[:10]}"

    @property
    def next_batch(self) -> int:
        return max(self.seen | self.reported, default=-1) + 1


def test_sigkill_never_loses_or_tears_a_batch(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    rng = random.Random(SEED)
    checker = Checker()
    kills = 0
    for _ in range(KILLS):
        child = spawn(data_dir, checker.next_batch)
        try:
            assert child.stdout is not None
            if rng.random() < 0.85:  # most kills land mid-stream, some during start-up
                assert child.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.2))
        finally:
            child.kill()  # SIGKILL, to our own child only
            out, err = child.communicate(timeout=60)
        assert child.returncode == -9, f"the child died on its own:\n{err.decode()}"
        kills += 1
        lines = out.decode().split()
        checker.reported.update(int(line) for line in lines if line != "ready")
        checker.verify(data_dir)
    assert kills >= 30
    assert len(checker.seen) > KILLS, "the children committed too few batches to test anything"
    # a last full pass over every group from index 1
    final = Checker()
    final.reported = checker.reported
    final.verify(data_dir)
    assert final.seen == checker.seen
