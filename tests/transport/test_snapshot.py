"""Snapshot streaming: chunks with credit-based flow control, outcome reported to the
sender, bounded memory for a 200 MiB snapshot (peak RSS measured in a subprocess)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from copycat.errors import SnapshotStreamError
from copycat.raft import ConfState, InstallSnapshot, Snapshot, SnapshotMetadata
from copycat.transport import read_file_chunks
from tests.transport.conftest import Collector, append, config, endpoints

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

META = SnapshotMetadata(index=42, term=3, conf_state=ConfState(voters=frozenset({1, 2, 3})))


def snapshot_message(data: bytes = b"") -> InstallSnapshot:
    return InstallSnapshot(term=3, sender=1, to=2, snapshot=Snapshot(metadata=META, data=data))


@pytest.mark.asyncio
async def test_a_snapshot_from_a_file_arrives_whole_beside_other_traffic(tmp_path: Path) -> None:
    data = bytes(range(256)) * 14_000  # about 3.4 MiB: several chunks
    path = tmp_path / "snap.bin"
    path.write_bytes(data)
    received: list[tuple[int, int, InstallSnapshot, bytes]] = []
    inbox = Collector()

    async def install(
        peer: int, group: int, msg: InstallSnapshot, chunks: AsyncIterator[bytes]
    ) -> None:
        parts = [chunk async for chunk in chunks]
        received.append((peer, group, msg, b"".join(parts)))

    cfg = dict(snapshot_chunk_bytes=256 << 10, snapshot_window_chunks=2)
    async with endpoints(config(1, **cfg), config(2, **cfg)) as (a, b):
        b.set_snapshot_handler(install)
        b.set_message_handler(inbox)
        stream = asyncio.create_task(
            a.send_snapshot(9, snapshot_message(), read_file_chunks(path, 300_000))
        )
        for i in range(200):  # other groups keep talking during the stream
            a.send(i % 5, append(1, 2, i))
            await asyncio.sleep(0)
        await stream
        await inbox.wait(200)
        ((peer, group, msg, got),) = received
        assert (peer, group) == (1, 9)
        assert msg.snapshot.metadata == META
        assert msg.snapshot.data == b""
        assert got == data
        assert a.stats().snapshots_sent == 1
        assert b.stats().snapshots_received == 1


@pytest.mark.asyncio
async def test_failures_are_reported_to_the_sender() -> None:
    async def refuse(
        peer: int, group: int, msg: InstallSnapshot, chunks: AsyncIterator[bytes]
    ) -> None:
        async for _ in chunks:
            raise OSError("disk full")

    async def quits_early(
        peer: int, group: int, msg: InstallSnapshot, chunks: AsyncIterator[bytes]
    ) -> None:
        async for _ in chunks:
            return

    async with endpoints(config(1), config(2)) as (a, b):
        with pytest.raises(SnapshotStreamError, match="no snapshot handler"):
            await a.send_snapshot(1, snapshot_message(b"x" * 100))
        b.set_snapshot_handler(refuse)
        with pytest.raises(SnapshotStreamError, match="disk full"):
            await a.send_snapshot(1, snapshot_message(b"x" * (3 << 20)))
        b.set_snapshot_handler(quits_early)
        with pytest.raises(SnapshotStreamError, match="before the end"):
            await a.send_snapshot(1, snapshot_message(b"x" * (3 << 20)))
        assert a.stats().snapshots_failed == 3
        # The connection survives failed streams.
        inbox = Collector()
        b.set_message_handler(inbox)
        a.send(1, append(1, 2, 0))
        await inbox.wait(1)


@pytest.mark.asyncio
async def test_a_cut_link_fails_the_stream_and_frees_the_receiver() -> None:
    started = asyncio.Event()

    async def install(
        peer: int, group: int, msg: InstallSnapshot, chunks: AsyncIterator[bytes]
    ) -> None:
        async for _ in chunks:
            started.set()

    async def endless() -> AsyncIterator[bytes]:
        chunk = b"y" * (1 << 20)
        for _ in range(10_000):
            yield chunk

    async with endpoints(config(1, snapshot_timeout_s=2.0), config(2, snapshot_timeout_s=2.0)) as (
        a,
        b,
    ):
        b.set_snapshot_handler(install)
        stream = asyncio.create_task(a.send_snapshot(1, snapshot_message(), endless()))
        await asyncio.wait_for(started.wait(), 10)
        a.faults.cut(1, 2)
        with pytest.raises(SnapshotStreamError):
            await asyncio.wait_for(stream, 10)
        a.faults.heal_all()


_RSS_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, zlib
    from copycat.raft import InstallSnapshot, Snapshot, SnapshotMetadata
    from copycat.transport import Endpoint, TransportConfig

    TOTAL = 200 << 20
    CHUNK = 1 << 20

    def vm_hwm_kib() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    async def main() -> None:
        state = {"bytes": 0, "crc": 0}

        async def install(peer, group, msg, chunks):
            async for chunk in chunks:
                state["bytes"] += len(chunk)
                state["crc"] = zlib.crc32(chunk, state["crc"])

        pattern = bytes(range(256)) * (CHUNK // 256)

        async def source(total):
            sent = 0
            while sent < total:
                yield pattern
                sent += len(pattern)

        a = Endpoint(TransportConfig(node_id=1, cluster_name="rss"))
        b = Endpoint(TransportConfig(node_id=2, cluster_name="rss"), on_snapshot=install)
        await a.start(); await b.start()
        a.add_peer(2, *b.address); b.add_peer(1, *a.address)
        msg = InstallSnapshot(term=1, sender=1, to=2, snapshot=Snapshot(metadata=SnapshotMetadata(index=5, term=1)))
        before = vm_hwm_kib()
        await asyncio.wait_for(a.send_snapshot(1, msg, source(TOTAL)), 60)
        after = vm_hwm_kib()
        expected = 0
        for _ in range(TOTAL // CHUNK):
            expected = zlib.crc32(pattern, expected)
        assert state["bytes"] == TOTAL, state
        assert state["crc"] == expected
        await a.close(); await b.close()
        print(before, after)

    asyncio.run(main())
    """
)


def test_a_200_mib_snapshot_streams_with_bounded_memory() -> None:
    """Both endpoints run in one child process; its peak RSS (VmHWM) may grow by less
    than 64 MiB while 200 MiB go through (the data never sits in memory at once)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read peak RSS")
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True, timeout=80, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    before_kib, after_kib = map(int, out.stdout.split())
    growth_mib = (after_kib - before_kib) / 1024
    print(f"peak RSS growth: {growth_mib:.1f} MiB")
    assert growth_mib < 64, f"peak RSS grew by {growth_mib:.1f} MiB"
