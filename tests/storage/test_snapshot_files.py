"""Snapshot data: streaming writes and reads, retention, atomic visibility."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from copycat.errors import CorruptLogError, StorageError
from copycat.raft import ConfState, SnapshotMetadata
from copycat.storage import MemorySnapshots, SnapshotFiles, SnapshotStore
from copycat.storage._snapshots import MAX_BLOCK_BYTES

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

G = 42
META = SnapshotMetadata(
    index=100, term=7, conf_state=ConfState(voters=frozenset({1, 2, 3}), learners=frozenset({9}))
)


@pytest.fixture(params=["files", "memory"])
def snapshots(request: pytest.FixtureRequest, tmp_path: Path) -> SnapshotStore:
    if request.param == "files":
        return SnapshotFiles(tmp_path / "snapshots")
    return MemorySnapshots()


def test_whole_bytes_round_trip(snapshots: SnapshotStore) -> None:
    info = snapshots.write_bytes(G, META, b"hello")
    assert (info.group, info.metadata, info.data_bytes) == (G, META, 5)
    assert snapshots.read_bytes(G, 100, 7) == b"hello"
    assert snapshots.read_metadata(G, 100, 7) == META
    assert snapshots.read_metadata(G, 100, 8) is None
    assert snapshots.list(G) == [META]
    assert snapshots.list(G + 1) == []


def test_empty_data(snapshots: SnapshotStore) -> None:
    snapshots.write_bytes(G, META, b"")
    assert snapshots.read_bytes(G, 100, 7) == b""
    with snapshots.open(G, 100, 7) as reader:
        assert list(reader.chunks()) == []
        assert reader.data_bytes == 0


def test_streaming_round_trip_of_many_chunks(snapshots: SnapshotStore) -> None:
    chunks = [os.urandom(n) for n in (1, 1000, 65536, 0, 7, MAX_BLOCK_BYTES + 5)]

    def produce() -> Iterator[bytes | memoryview]:
        for chunk in chunks:
            yield memoryview(chunk)

    info = snapshots.write(G, META, produce())
    assert info.data_bytes == sum(map(len, chunks))
    with snapshots.open(G, 100, 7) as reader:
        assert reader.metadata == META
        assert reader.data_bytes == info.data_bytes
        streamed = list(reader.chunks())
    assert all(len(c) <= max(MAX_BLOCK_BYTES, 1 << 20) for c in streamed)
    assert b"".join(streamed) == b"".join(chunks)


def test_incremental_writer(snapshots: SnapshotStore) -> None:
    writer = snapshots.begin_write(G, META)
    writer.write(b"abc")
    assert snapshots.read_metadata(G, 100, 7) is None  # invisible until finished
    writer.write(bytearray(b"def"))
    writer.finish()
    assert snapshots.read_bytes(G, 100, 7) == b"abcdef"
    with pytest.raises(StorageError):
        writer.write(b"more")


def test_an_aborted_write_leaves_nothing(snapshots: SnapshotStore, tmp_path: Path) -> None:
    def broken_stream() -> None:
        with snapshots.begin_write(G, META) as writer:
            writer.write(b"partial")
            raise RuntimeError("the stream broke")

    with pytest.raises(RuntimeError):
        broken_stream()
    assert snapshots.list(G) == []
    assert snapshots.read_metadata(G, 100, 7) is None
    if isinstance(snapshots, SnapshotFiles):
        leftovers = [p for p in snapshots.root.rglob("*") if p.is_file()]
        assert leftovers == []


def test_a_failing_chunk_source_leaves_nothing(snapshots: SnapshotStore) -> None:
    def produce() -> Iterator[bytes]:
        yield b"x" * 10
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        snapshots.write(G, META, produce())
    assert snapshots.list(G) == []


def test_newest_n_are_kept(tmp_path: Path) -> None:
    for store in (SnapshotFiles(tmp_path, keep=3), MemorySnapshots(keep=3)):
        for index in (5, 1, 9, 3, 7):
            store.write_bytes(G, SnapshotMetadata(index=index, term=1), b"%d" % index)
        assert [m.index for m in store.list(G)] == [9, 7, 5]
        store.prune(G, protect=SnapshotMetadata(index=5, term=1))
        store.write_bytes(G, SnapshotMetadata(index=11, term=1), b"11")
        assert [m.index for m in store.list(G)] == [11, 9, 7]
        assert store.read_bytes(G, 9, 1) == b"9"


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep"):
        SnapshotFiles(tmp_path, keep=0)
    with pytest.raises(ValueError, match="keep"):
        MemorySnapshots(keep=0)


def test_delete_group(snapshots: SnapshotStore) -> None:
    snapshots.write_bytes(G, META, b"x")
    snapshots.write_bytes(G + 1, META, b"y")
    snapshots.delete_group(G)
    snapshots.delete_group(G)
    assert snapshots.list(G) == []
    assert snapshots.read_bytes(G + 1, 100, 7) == b"y"


def test_a_missing_snapshot_is_reported_by_name(snapshots: SnapshotStore) -> None:
    with pytest.raises(CorruptLogError) as info:
        snapshots.open(G, 100, 7)
    assert (info.value.group, info.value.index) == (G, 100)


def test_interrupted_writes_are_cleaned_up_on_open(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path)
    files.write_bytes(G, META, b"kept")
    writer = files.begin_write(G, SnapshotMetadata(index=200, term=7))
    writer.write(b"half")  # the process "dies" here: the temporary file stays
    temporaries = [p for p in files.path(G, 1, 1).parent.iterdir() if ".tmp-" in p.name]
    assert len(temporaries) == 1
    reopened = SnapshotFiles(tmp_path)
    assert [p.name for p in reopened.path(G, 1, 1).parent.iterdir()] == [files.path(G, 100, 7).name]
    assert reopened.read_bytes(G, 100, 7) == b"kept"
    writer.abort()


def test_index_must_be_positive(snapshots: SnapshotStore) -> None:
    with pytest.raises(ValueError, match="positive"):
        snapshots.begin_write(G, SnapshotMetadata(index=0, term=0))
