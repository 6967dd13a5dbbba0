"""The log store against `copycat.raft.MemoryLog` as an oracle (hypothesis, stateful).

Random batches of appends (with conflicting suffixes, gaps and compacted prefixes),
hard states, memberships, snapshots taken and installed, compactions and group
deletions run against both the store and one `MemoryLog` per group; batches the oracle
refuses must fail whole in the store. After every step, and after restarts of the LMDB
store, every read of every group must agree.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from copycat.errors import CompactedError, StorageError, UnavailableError
from copycat.raft import ConfState, Entry, HardState, MemoryLog, Snapshot, SnapshotMetadata
from copycat.storage import LmdbLogStore, LogStore, MemoryLogStore, WriteBatch

GROUPS = (1, 2, 1 << 100)

Op = tuple[str, int, int, int, int]
ops = st.tuples(
    st.sampled_from(
        ["append", "append", "append", "hard", "conf", "snap", "install", "compact", "delete"]
    ),
    st.sampled_from(GROUPS),
    st.integers(0, 12),
    st.integers(0, 5),
    st.integers(0, 3),
)


class Model:
    """What one group should hold: a MemoryLog and the membership set explicitly."""

    def __init__(self) -> None:
        self.log = MemoryLog()
        self.conf: ConfState | None = None


class LogStoreVersusMemoryLog(RuleBasedStateMachine):
    backend = "lmdb"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="copycat-oracle-"))
        self.store: LogStore = self._open()
        self.models = {g: Model() for g in GROUPS}
        self.next_term = 1

    def _open(self) -> LogStore:
        if self.backend == "lmdb":
            return LmdbLogStore(self.dir)
        return MemoryLogStore()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _resolve(self, models: dict[int, Model], batch: WriteBatch, op: Op) -> None:
        """Record `op` in `batch` and apply it to the oracle; raises what the oracle
        raises (the op is in the batch then, so the store must refuse the batch)."""
        kind, g, a, b, c = op
        model = models[g]
        log = model.log
        if kind == "append":
            start = max(1, log.first_index() - 2 + a)
            if start > log.last_index() + 2:
                start = log.last_index() + 1 + (a % 2)  # sometimes a gap
            self.next_term += c // 2
            term = self.next_term
            entries = [
                Entry(
                    term=term + (i >= b // 2),
                    index=start + i,
                    data=b"%d-%d-%d" % (g, start + i, term),
                )
                for i in range(b + 1)
            ]
            self.next_term += 1
            batch.append(g, entries)
            log.append(entries)
        elif kind == "hard":
            hs = HardState(term=a, vote=b, commit=c)
            batch.set_hard_state(g, hs)
            log.set_hard_state(hs)
        elif kind == "conf":
            model.conf = ConfState(voters=frozenset(range(1, b + 2)), learners=frozenset({10 + c}))
            batch.set_conf_state(g, model.conf)
        elif kind == "snap":
            index = log.first_index() - 2 + a
            conf = ConfState(voters=frozenset({b + 1}))
            try:
                term = log.term(index)
            except (CompactedError, UnavailableError):
                term = 1
            meta = SnapshotMetadata(index=index, term=term, conf_state=conf)
            data = b"snap-%d-%d-%d" % (g, index, term)
            if index > 0 and index > log.snapshot().metadata.index and index <= log.last_index():
                self.store.snapshots.write_bytes(g, meta, data)
            batch.record_snapshot(g, meta)
            log.create_snapshot(index, conf, data)
        elif kind == "install":
            index = log.snapshot().metadata.index + a - 2
            if index <= 0:
                index = 1
            term = self.next_term
            self.next_term += 1
            meta = SnapshotMetadata(
                index=index, term=term, conf_state=ConfState(voters=frozenset({c + 1}))
            )
            data = b"inst-%d-%d-%d" % (g, index, term)
            if index > log.snapshot().metadata.index:
                self.store.snapshots.write_bytes(g, meta, data)
                model.conf = None
            batch.install_snapshot(g, meta)
            log.apply_snapshot(Snapshot(metadata=meta, data=data))
        elif kind == "compact":
            index = log.first_index() - 2 + a
            batch.compact(g, index)
            log.compact(index)
        else:
            models[g] = Model()
            batch.delete_group(g)

    @rule(batch_ops=st.lists(ops, min_size=1, max_size=4))
    def commit_batch(self, batch_ops: list[Op]) -> None:
        trial = copy.deepcopy(self.models)
        batch = WriteBatch()
        # A host writes the data of a snapshot it installs after the batch that deleted
        # the group committed (retention may remove files older than the group's current
        # snapshot at any time); so no snapshot follows a delete of its group here.
        deleted: set[int] = set()
        kept: list[Op] = []
        for op in batch_ops:
            if op[0] == "delete":
                deleted.add(op[1])
            if not (op[0] in ("snap", "install") and op[1] in deleted):
                kept.append(op)
        try:
            for op in kept:
                self._resolve(trial, batch, op)
        except (ValueError, StorageError) as exc:
            with pytest.raises(type(exc)):
                self.store.commit(batch)
            return
        self.store.commit(batch)
        self.models = trial

    @rule()
    def restart(self) -> None:
        if self.backend == "lmdb":
            self.store.close()
            self.store = self._open()

    @invariant()
    def every_read_agrees(self) -> None:
        expected_groups = []
        for g, model in self.models.items():
            want = model.log
            got = self.store.group(g)
            first, last = want.first_index(), want.last_index()
            assert (got.first_index(), got.last_index()) == (first, last)
            assert got.entries(first, last + 1) == want.entries(first, last + 1)
            for index in range(first - 1, last + 1):
                assert got.term(index) == want.term(index)
            if first >= 2:
                with pytest.raises(CompactedError):
                    got.term(first - 2)
                with pytest.raises(CompactedError):
                    got.entries(first - 1, last + 1)
            with pytest.raises(UnavailableError):
                got.term(last + 1)
            assert got.snapshot() == want.snapshot()
            hard, conf = got.initial_state()
            assert hard == want.hard_state
            assert conf == (
                model.conf if model.conf is not None else want.snapshot().metadata.conf_state
            )
            if last or first > 1 or not hard.is_empty() or model.conf is not None:
                expected_groups.append(g)
        assert set(expected_groups) <= set(self.store.groups())


class MemoryLogStoreVersusMemoryLog(LogStoreVersusMemoryLog):
    backend = "memory"


_settings = settings(
    max_examples=150,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestLmdbAgainstOracle = LogStoreVersusMemoryLog.TestCase
TestLmdbAgainstOracle.settings = _settings
TestMemoryAgainstOracle = MemoryLogStoreVersusMemoryLog.TestCase
TestMemoryAgainstOracle.settings = _settings
