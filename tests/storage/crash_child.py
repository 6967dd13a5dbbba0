"""The child process of the crash test: appends batches for many groups, forever.

Run as `python crash_child.py DATA_DIR FIRST_BATCH SEED`. Prints `ready` once the store
is open, then each batch id on its own line right after `commit` returned for it. The
parent kills it with SIGKILL at a random moment. What a batch holds is a pure function
of (seed, batch id), `batch_plan`, so the parent can tell a whole batch from a part.
"""

from __future__ import annotations

import random
import sys

GROUPS = tuple([1, 2, 3, (1 << 64) + 5, (1 << 127) + 11] + [1000 + 7919 * i for i in range(35)])
BIG_ENTRY_BYTES = 9000  # larger than a page: LMDB overflow pages


def batch_plan(seed: int, batch: int) -> list[tuple[int, int]]:
    """The (group, number of entries) pairs batch `batch` appends, in order."""
    rng = random.Random(f"{seed}:{batch}")
    groups = rng.sample(GROUPS, rng.randint(1, 8))
    return [(gid, rng.randint(1, 4)) for gid in groups]


def entry_data(batch: int, group: int, position: int, count: int) -> bytes:
    head = b"%d:%d:%d:%d:" % (batch, group, position, count)
    if (batch + position) % 17 == 0:
        return head + b"B" * BIG_ENTRY_BYTES
    return head + b"s" * (batch % 50)


def parse_entry_data(data: bytes) -> tuple[int, int, int, int]:
    batch, group, position, count, _ = data.split(b":", 4)
    return int(batch), int(group), int(position), int(count)


def main() -> None:
    from copycat.raft import Entry, HardState
    from copycat.storage import LmdbLogStore, WriteBatch

    data_dir, first_batch, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = LmdbLogStore(data_dir)
    print("ready", flush=True)
    batch_id = first_batch
    while True:
        batch = WriteBatch()
        for gid, count in batch_plan(seed, batch_id):
            last = store.group(gid).last_index()
            batch.append(
                gid,
                [
                    Entry(term=1, index=last + 1 + j, data=entry_data(batch_id, gid, j, count))
                    for j in range(count)
                ],
            )
            batch.set_hard_state(gid, HardState(term=1, vote=1, commit=last + count))
        store.commit(batch)
        print(batch_id, flush=True)
        batch_id += 1


if __name__ == "__main__":
    main()
