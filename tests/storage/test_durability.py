"""A durable store fsyncs what it acknowledges; a non-durable one only when asked.

Why kill -9 cannot see a missing fsync (test_crash_recovery.py): SIGKILL ends the
process, not the machine. Every write LMDB made already sits in the kernel's page
cache, which outlives the process and reaches the disk later, so a store reopened
after kill -9 holds every commit whether or not it was fsynced. Only a power cut (or
a kernel crash) drops the page cache. So these tests check the promise directly:
  * the LMDB environment a durable store opens has `sync` and `metasync` on (LMDB
    then fsyncs inside every `txn.commit()`), and a non-durable one has `sync` off;
  * a power-cut double: an LMDB environment that keeps, as "the disk", a copy of the
    data file taken whenever LMDB fsyncs (a commit with `sync` on, or `env.sync()`).
    A simulated power cut reopens the store from that copy: what was not synced is
    lost, as it would be on a real machine.
The store reaches LMDB through `lmdb.open` and `LmdbLogStore._env` (private): there is
no public seam below `LogStore.commit`, and the flags are the property under test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lmdb
import pytest

from copycat._config import Config
from copycat.storage import LmdbLogStore, LogStore, open_log_store

from .helpers import append, make_entries

if TYPE_CHECKING:
    from pathlib import Path

_DATA_FILE = "data.mdb"


def env_flags(store: LogStore) -> dict[str, bool]:
    assert isinstance(store, LmdbLogStore)
    flags: dict[str, bool] = store._env.flags()
    return flags


# -- the flags LMDB is opened with -----------------------------------------------------------


def test_a_durable_config_opens_lmdb_with_sync_and_metasync_on(tmp_path: Path) -> None:
    """STYLE.md section 6: "Acknowledge only after fsync." With `sync` and `metasync`
    on, LMDB's `txn.commit()` fsyncs the data and the meta page before it returns."""
    # init / act
    store = Config(data_dir=str(tmp_path / "node"), durable=True).open_log_store()
    try:
        # check
        flags = env_flags(store)
        assert flags["sync"] is True
        assert flags["metasync"] is True
    finally:
        store.close()


def test_the_default_config_is_durable(tmp_path: Path) -> None:
    store = Config(data_dir=str(tmp_path / "node")).open_log_store()
    try:
        assert env_flags(store)["sync"] is True
    finally:
        store.close()


def test_a_non_durable_config_opens_lmdb_with_sync_off(tmp_path: Path) -> None:
    store = Config(data_dir=str(tmp_path / "node"), durable=False).open_log_store()
    try:
        assert env_flags(store)["sync"] is False
    finally:
        store.close()


@pytest.mark.parametrize("durable", [True, False])
def test_the_storage_factory_passes_durable_to_lmdb(tmp_path: Path, durable: bool) -> None:
    store = open_log_store(tmp_path / "node", durable=durable)
    try:
        assert env_flags(store)["sync"] is durable
        assert env_flags(store)["metasync"] is True
    finally:
        store.close()


# -- the power-cut double --------------------------------------------------------------------


class _Txn:
    """A write transaction whose commit reports to its environment."""

    def __init__(self, env: PowerCutEnv, txn: lmdb.Transaction) -> None:
        self._env = env
        self.real = txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __enter__(self) -> _Txn:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.real.abort()

    def commit(self) -> None:
        self.real.commit()
        if self._env.real.flags()["sync"]:  # LMDB fsynced inside commit
            self._env.disk_now()


class PowerCutEnv:
    """An LMDB environment whose "disk" holds only what LMDB fsynced."""

    def __init__(self, real: lmdb.Environment, path: str) -> None:
        self.real = real
        self.path = path
        self.disk: bytes | None = None  # the data file as last fsynced; None: never

    def disk_now(self) -> None:
        with open(f"{self.path}/{_DATA_FILE}", "rb") as f:
            self.disk = f.read()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        txn = self.real.begin(*args, **kwargs)
        return _Txn(self, txn) if kwargs.get("write") else txn

    def open_db(self, key: bytes, txn: Any = None, **kwargs: Any) -> Any:
        return self.real.open_db(key, txn=txn.real if isinstance(txn, _Txn) else txn, **kwargs)

    def sync(self, force: bool = False) -> None:
        self.real.sync(force)
        self.disk_now()

    def power_cut(self, into: Path) -> Path:
        """A data directory holding what survived the power cut."""
        log_dir = into / "log"
        log_dir.mkdir(parents=True)
        if self.disk is not None:
            (log_dir / _DATA_FILE).write_bytes(self.disk)
        return into


@pytest.fixture
def envs(monkeypatch: pytest.MonkeyPatch) -> list[PowerCutEnv]:
    """Every LMDB environment opened during the test, each a power-cut double."""
    opened: list[PowerCutEnv] = []
    real_open = lmdb.open

    def fake_open(path: str, **kwargs: Any) -> PowerCutEnv:
        env = PowerCutEnv(real_open(path, **kwargs), path)
        opened.append(env)
        return env

    monkeypatch.setattr(lmdb, "open", fake_open)
    return opened


def survivors(env: PowerCutEnv, into: Path) -> list[bytes]:
    """Group 1's entries in the store reopened after a power cut."""
    with LmdbLogStore(env.power_cut(into)) as after:
        if 1 not in after.groups():
            return []
        log = after.group(1)
        return [e.data for e in log.entries(log.first_index(), log.last_index() + 1)]


def test_power_cut_keeps_every_commit_a_durable_store_acknowledged(
    tmp_path: Path, envs: list[PowerCutEnv]
) -> None:
    """STYLE.md section 6: "Acknowledge only after fsync." Each `commit` that returned
    survives a power cut that drops everything not fsynced."""
    # init
    store = Config(data_dir=str(tmp_path / "node"), durable=True).open_log_store()
    try:
        # act: three acknowledged commits, then the power goes (no close)
        for lo in (1, 4, 7):
            append(store, 1, make_entries(lo, lo + 3, term=1))
        (env,) = envs
        # check
        assert survivors(env, tmp_path / "after") == [b"e%d" % i for i in range(1, 10)]
    finally:
        store.close()


def test_power_cut_may_lose_non_durable_commits_until_sync(
    tmp_path: Path, envs: list[PowerCutEnv]
) -> None:
    """`durable=False`: "a machine crash may lose the latest commits"; `sync()` (and a
    clean `close()`) forces them to disk."""
    # init
    store = Config(data_dir=str(tmp_path / "node"), durable=False).open_log_store()
    try:
        (env,) = envs
        append(store, 1, make_entries(1, 4, term=1))
        # check: not fsynced, so the power cut loses it
        assert survivors(env, tmp_path / "cut1") == []
        # act: sync, then more unsynced commits
        store.sync()
        append(store, 1, make_entries(4, 6, term=1))
        # check: the power cut keeps exactly what sync() covered
        assert survivors(env, tmp_path / "cut2") == [b"e1", b"e2", b"e3"]
    finally:
        store.close()
    # a clean close of a non-durable store syncs everything
    assert survivors(env, tmp_path / "cut3") == [b"e%d" % i for i in range(1, 6)]
