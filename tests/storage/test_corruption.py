"""Damaged bytes are reported by name (group and index), never returned as data.

Record values are damaged in place in LMDB's data file (found by a unique pattern in
their data); snapshot files are damaged at every structural position and at random
data positions, and truncated. A store file LMDB itself cannot read makes opening
fail with a clear `StorageError`.
"""

from __future__ import annotations

import random
import shutil
import struct
from typing import TYPE_CHECKING

import lmdb
import pytest

from copycat.errors import CorruptLogError, FormatVersionError, StorageError
from copycat.raft import ConfState, Entry, HardState, SnapshotMetadata
from copycat.storage import LmdbLogStore, SnapshotFiles
from copycat.storage._codec import (
    META_FORMAT_KEY,
    STORE_FORMAT_VERSION,
    decode_format_version,
    encode_format_version,
)
from copycat.storage._snapshots import SNAPSHOT_FORMAT_VERSION, encode_header

from .helpers import append, commit, make_entries, take_snapshot

if TYPE_CHECKING:
    from pathlib import Path

G = 9
OTHER = 10


def marked(index: int) -> bytes:
    return b"<<MARK-%06d>>" % index + b"." * 40


def data_file(root: Path) -> Path:
    return root / "log" / "data.mdb"


def flip_at(path: Path, offset: int, mask: int = 0x5A) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def find_all(path: Path, pattern: bytes) -> list[int]:
    """Every place `pattern` is in the file: the live record, and stale copies LMDB's
    copy-on-write left in free pages (damaging those too is harmless)."""
    content = path.read_bytes()
    found = []
    at = content.find(pattern)
    while at >= 0:
        found.append(at)
        at = content.find(pattern, at + 1)
    assert found, "pattern not found"
    return found


def damage(path: Path, pattern: bytes, where: int) -> None:
    for at in find_all(path, pattern):
        flip_at(path, at + where)


def build_store(root: Path) -> None:
    with LmdbLogStore(root) as store:
        append(store, G, [Entry(term=2, index=i, data=marked(i)) for i in range(1, 21)])
        append(store, OTHER, make_entries(1, 21, term=1))
        commit(store, ("set_hard_state", G, HardState(term=0x0102030405060708, vote=3, commit=20)))


# -- log records ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "name"),
    [(0, "data"), (-9, "kind"), (-5, "term"), (-13, "checksum"), (30, "data tail")],
)
def test_a_damaged_entry_is_reported_by_name(tmp_path: Path, where: int, name: str) -> None:
    build_store(tmp_path)
    damage(data_file(tmp_path), b"<<MARK-000007>>", where)
    with LmdbLogStore(tmp_path) as store:
        log = store.group(G)
        with pytest.raises(CorruptLogError) as info:
            log.entries(1, 21)
        assert (info.value.group, info.value.index) == (G, 7)
        with pytest.raises(CorruptLogError):
            log.entries(7, 8)
        with pytest.raises(CorruptLogError) as info:
            log.term(7)
        assert (info.value.group, info.value.index) == (G, 7)
        # the rest is still served, and the message says what happened
        assert [e.data for e in log.entries(1, 7)] == [marked(i) for i in range(1, 7)]
        assert [e.data for e in log.entries(8, 21)] == [marked(i) for i in range(8, 21)]
        assert "group 9 index 7" in str(info.value)
        assert store.group(OTHER).entries(1, 21) == make_entries(1, 21, term=1)


def test_a_damaged_last_entry_is_reported_by_name(tmp_path: Path) -> None:
    build_store(tmp_path)
    damage(data_file(tmp_path), b"<<MARK-000020>>", 3)
    with LmdbLogStore(tmp_path) as store:
        log = store.group(G)
        assert log.last_index() == 20
        with pytest.raises(CorruptLogError) as info:
            log.term(20)
        assert (info.value.group, info.value.index) == (G, 20)
        with pytest.raises(CorruptLogError):
            log.entries(15, 21)


def test_a_damaged_hard_state_refuses_the_group_only(tmp_path: Path) -> None:
    build_store(tmp_path)
    damage(data_file(tmp_path), struct.pack("<Q", 0x0102030405060708), 2)
    with LmdbLogStore(tmp_path) as store:
        with pytest.raises(CorruptLogError) as info:
            store.group(G).initial_state()
        assert info.value.group == G
        with pytest.raises(CorruptLogError):
            store.group(G).entries(1, 2)
        with pytest.raises(CorruptLogError):  # no write may paper over it
            commit(store, ("set_hard_state", G, HardState(term=1)))
        assert store.group(OTHER).entries(1, 3) == make_entries(1, 3, term=1)
        store.delete_group(G)  # the operator's way out: drop it, re-replicate
        assert store.group(G).last_index() == 0


def test_a_damaged_group_metadata_record_refuses_the_group_only(tmp_path: Path) -> None:
    build_store(tmp_path)
    with LmdbLogStore(tmp_path) as store:
        commit(store, ("set_meta", G, b"<<GROUP-META>>"), ("set_meta", OTHER, b"fine"))
    damage(data_file(tmp_path), b"<<GROUP-META>>", 4)
    with LmdbLogStore(tmp_path) as store:
        with pytest.raises(CorruptLogError) as info:
            store.group(G).meta()
        assert info.value.group == G
        assert store.group(OTHER).meta() == b"fine"
        store.delete_group(G)  # the operator's way out
        assert store.group(G).meta() is None


def test_a_missing_entry_is_reported(tmp_path: Path) -> None:
    build_store(tmp_path)
    env = lmdb.open(str(tmp_path / "log"), max_dbs=3)
    with env.begin(write=True) as txn:
        entries = env.open_db(b"entries", txn=txn)
        key = G.to_bytes(16, "big") + (5).to_bytes(8, "big")
        assert txn.delete(key, db=entries)
    env.close()
    with LmdbLogStore(tmp_path) as store:
        with pytest.raises(CorruptLogError) as info:
            store.group(G).entries(1, 21)
        assert (info.value.group, info.value.index) == (G, 5)
        with pytest.raises(CorruptLogError):
            store.group(G).term(5)


def test_a_record_moved_to_another_key_is_refused(tmp_path: Path) -> None:
    build_store(tmp_path)
    env = lmdb.open(str(tmp_path / "log"), max_dbs=3)
    with env.begin(write=True) as txn:
        entries = env.open_db(b"entries", txn=txn)
        prefix = G.to_bytes(16, "big")
        value = txn.get(prefix + (3).to_bytes(8, "big"), db=entries)
        assert value is not None
        txn.put(prefix + (4).to_bytes(8, "big"), value, db=entries)
    env.close()
    with LmdbLogStore(tmp_path) as store, pytest.raises(CorruptLogError) as info:
        store.group(G).entries(1, 21)
    assert info.value.index == 4


# -- the store file ------------------------------------------------------------------------


def test_a_store_file_lmdb_cannot_read_refuses_to_open(tmp_path: Path) -> None:
    build_store(tmp_path)
    path = data_file(tmp_path)
    with path.open("r+b") as f:
        f.write(random.Random(1).randbytes(8192))  # both meta pages
    with pytest.raises(StorageError, match="damaged") as info:
        LmdbLogStore(tmp_path)
    assert isinstance(info.value.__cause__, lmdb.Error)
    # the directory lock was released: a repaired store opens again
    shutil.rmtree(tmp_path / "log")
    LmdbLogStore(tmp_path).close()


def test_a_file_that_is_not_lmdb_refuses_to_open(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    data_file(tmp_path).write_bytes(b"not a database" * 1000)
    with pytest.raises(StorageError, match="damaged"):
        LmdbLogStore(tmp_path)


def test_another_format_version_refuses_to_open(tmp_path: Path) -> None:
    build_store(tmp_path)
    env = lmdb.open(str(tmp_path / "log"), max_dbs=3)
    with env.begin(write=True) as txn:
        txn.put(META_FORMAT_KEY, encode_format_version(99), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(FormatVersionError) as info:
        LmdbLogStore(tmp_path)
    assert (info.value.found, info.value.expected) == (99, STORE_FORMAT_VERSION)


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    """Format 2 only added the group metadata record: a version 1 store reads as it is,
    and its format record is rewritten so that version 1 code refuses it from then on."""
    build_store(tmp_path)
    env = lmdb.open(str(tmp_path / "log"), max_dbs=3)
    with env.begin(write=True) as txn:
        txn.put(META_FORMAT_KEY, encode_format_version(1), db=env.open_db(b"meta", txn=txn))
    env.close()
    store = LmdbLogStore(tmp_path)
    assert store.groups()
    store.close()
    env = lmdb.open(str(tmp_path / "log"), max_dbs=3)
    with env.begin() as txn:
        raw = txn.get(META_FORMAT_KEY, db=env.open_db(b"meta", txn=txn))
    env.close()
    assert raw is not None
    assert decode_format_version(raw) == STORE_FORMAT_VERSION == 2


def test_a_damaged_format_record_refuses_to_open(tmp_path: Path) -> None:
    build_store(tmp_path)
    env = lmdb.open(str(tmp_path / "log"), max_dbs=3)
    with env.begin(write=True) as txn:
        damaged = bytearray(encode_format_version())
        damaged[-1] ^= 1
        txn.put(META_FORMAT_KEY, bytes(damaged), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(StorageError, match="checksum"):
        LmdbLogStore(tmp_path)


# -- snapshot files --------------------------------------------------------------------------

SNAP = SnapshotMetadata(index=500, term=3, conf_state=ConfState(voters=frozenset({1, 2, 3})))


def write_snapshot(root: Path) -> tuple[SnapshotFiles, bytes, Path]:
    files = SnapshotFiles(root)
    data = random.Random(7).randbytes(300_000)
    files.write(G, SNAP, [data[i : i + 65536] for i in range(0, len(data), 65536)])
    return files, data, files.path(G, 500, 3)


def structural_offsets(data_len: int, header_len: int, chunk: int) -> list[int]:
    offsets = list(range(header_len))  # the whole header
    at = header_len
    for start in range(0, data_len, chunk):
        offsets.extend(range(at, at + 8))  # each block's length and checksum
        at += 8 + min(chunk, data_len - start)
    offsets.extend(range(at, at + 32))  # the whole trailer
    return offsets


def assert_refused(files: SnapshotFiles, original: bytes) -> CorruptLogError | FormatVersionError:
    streamed = b""

    def stream() -> None:
        nonlocal streamed
        with files.open(G, 500, 3) as reader:
            for chunk in reader.chunks():
                streamed += chunk

    with pytest.raises((CorruptLogError, FormatVersionError)) as info:
        stream()
    assert original.startswith(streamed), "damaged bytes were handed out"
    with pytest.raises((CorruptLogError, FormatVersionError)):
        files.read_bytes(G, 500, 3)
    error = info.value
    assert isinstance(error, CorruptLogError | FormatVersionError)
    return error


def test_a_flipped_byte_anywhere_in_a_snapshot_is_refused(tmp_path: Path) -> None:
    files, data, path = write_snapshot(tmp_path)
    pristine = path.read_bytes()
    header_len = len(encode_header(G, SNAP, SNAPSHOT_FORMAT_VERSION))
    rng = random.Random(3)
    offsets = structural_offsets(len(data), header_len, 65536)
    offsets += [rng.randrange(len(pristine)) for _ in range(150)]
    for offset in offsets:
        path.write_bytes(pristine)
        flip_at(path, offset, mask=1 << rng.randrange(8))
        error = assert_refused(files, data)
        assert isinstance(error, CorruptLogError), f"offset {offset}: {error!r}"
        assert (error.group, error.index) == (G, 500)
    path.write_bytes(pristine)
    assert files.read_bytes(G, 500, 3) == data


def test_a_truncated_snapshot_is_refused_before_any_data(tmp_path: Path) -> None:
    files, _, path = write_snapshot(tmp_path)
    pristine = path.read_bytes()
    for size in (0, 5, 20, 100, len(pristine) // 2, len(pristine) - 33, len(pristine) - 1):
        path.write_bytes(pristine[:size])
        with pytest.raises(CorruptLogError) as info:
            files.open(G, 500, 3)
        assert (info.value.group, info.value.index) == (G, 500)
    path.write_bytes(pristine + b"extra")
    with pytest.raises(CorruptLogError):
        files.open(G, 500, 3)


def test_a_snapshot_renamed_to_another_index_is_refused(tmp_path: Path) -> None:
    files, _, path = write_snapshot(tmp_path)
    path.rename(files.path(G, 600, 3))
    with pytest.raises(CorruptLogError, match="header names"):
        files.open(G, 600, 3)


def test_a_snapshot_of_another_format_version_is_refused(tmp_path: Path) -> None:
    files, _, path = write_snapshot(tmp_path)
    pristine = path.read_bytes()
    header = encode_header(G, SNAP, SNAPSHOT_FORMAT_VERSION)
    path.write_bytes(encode_header(G, SNAP, 2) + pristine[len(header) :])
    with pytest.raises(FormatVersionError) as info:
        files.open(G, 500, 3)
    assert (info.value.found, info.value.expected) == (2, SNAPSHOT_FORMAT_VERSION)


def test_the_log_store_reports_a_damaged_snapshot_by_name(tmp_path: Path) -> None:
    with LmdbLogStore(tmp_path) as store:
        append(store, G, make_entries(1, 11, term=1))
        take_snapshot(store, G, 8, b"precious state" * 100)
        path = store.snapshots.path(G, 8, 1)  # type: ignore[attr-defined]
    flip_at(path, path.stat().st_size - 100)
    with LmdbLogStore(tmp_path) as store:
        with pytest.raises(CorruptLogError) as info:
            store.group(G).snapshot()
        assert (info.value.group, info.value.index) == (G, 8)
        assert store.group(G).snapshot_metadata().index == 8
    path.unlink()
    with LmdbLogStore(tmp_path) as store, pytest.raises(CorruptLogError, match="missing"):
        store.group(G).snapshot()
