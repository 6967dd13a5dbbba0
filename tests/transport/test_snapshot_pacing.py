"""The snapshot sender's delay-based window (`_Pacer`), on a simulated bottleneck link:
it fills a slow link without queueing seconds of chunks ahead of other groups' messages,
and opens up to the receiver's credits on a fast one (simulated time: deterministic);
then over the WAN emulator, the order a user sees: a message overtakes most of a
snapshot."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from copycat.raft import (
    ConfState,
    Heartbeat,
    InstallSnapshot,
    Message,
    Snapshot,
    SnapshotMetadata,
)
from copycat.testing.wan import WanEmulator, routes_for
from copycat.transport import Endpoint
from copycat.transport._endpoint import _Pacer
from tests.transport.conftest import config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

CHUNK = 128 << 10


def run(bandwidth: float, rtt_s: float, credits: int, chunks: int = 400) -> dict[str, float]:
    """Send `chunks` chunks through a FIFO link of `bandwidth` bytes/s and `rtt_s`; each
    credit comes back half a round trip after its chunk left the link. Returns the
    throughput, the longest time a chunk queued before the link, and the largest window."""
    pacer = _Pacer(0.025)
    now = 0.0
    link_free = 0.0
    credits_due: list[float] = []  # in order: a FIFO link
    sent = done = 0
    worst_queue = widest = 0.0
    while done < chunks:
        while sent < chunks and pacer.open() and len(pacer.sent) < credits:
            pacer.sent.append(now)
            start = max(now, link_free)
            worst_queue = max(worst_queue, start - now)
            link_free = start + CHUNK / bandwidth
            credits_due.append(link_free + rtt_s)
            sent += 1
        widest = max(widest, pacer.window)
        now = credits_due.pop(0)
        pacer.credited(now)
        done += 1
    return {"rate": chunks * CHUNK / now, "queue_s": worst_queue, "window": widest}


@pytest.mark.parametrize(("mbit", "rtt_s"), [(10, 0.1), (10, 0.15), (100, 0.1), (50, 0.03)])
def test_a_slow_link_is_filled_without_a_long_queue(mbit: float, rtt_s: float) -> None:
    bandwidth = mbit * 1e6 / 8
    got = run(bandwidth, rtt_s, credits=128)
    assert got["rate"] >= 0.9 * bandwidth
    # What a message behind the chunks waits for: bounded by about the target plus a
    # chunk or two on the wire, where 128 credits would queue 128 chunks.
    assert got["queue_s"] <= 0.1 + 3 * CHUNK / bandwidth
    assert got["queue_s"] < 0.25 * 128 * CHUNK / bandwidth


def test_a_fast_link_opens_the_window_to_the_receivers_credits() -> None:
    bandwidth = 1e9 / 8
    got = run(bandwidth, 0.1, credits=128, chunks=8000)  # 1 GiB: past the ramp
    assert got["window"] >= 100  # the bandwidth-delay product is about 95 chunks
    assert got["rate"] >= 0.8 * bandwidth


def test_the_window_never_falls_below_two_chunks() -> None:
    pacer = _Pacer(0.025)
    for i in range(50):
        pacer.sent.append(0.0)
        pacer.credited(0.01 + i)  # every credit later than the last: a growing queue
    assert pacer.window == _Pacer.MIN_WINDOW


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_message_sent_during_a_snapshot_does_not_wait_for_its_end() -> None:
    """Over a 10 Mbit/s link at 100 ms RTT (the WAN emulator), with credits for the whole
    snapshot: a heartbeat sent once the stream is under way arrives long before its last
    chunk, because the sender keeps only a few chunks in flight. Without the pacer every
    chunk is in the socket before the heartbeat, and it arrives behind all of them."""
    total = 32
    data = bytes(range(256)) * (total * CHUNK // 256)  # 4 MiB: 3.4 s on this link
    progress: list[int] = []  # chunks received, read when the heartbeat arrives
    seen_at: list[int] = []
    under_way = asyncio.Event()

    async def install(
        peer: int, group: int, msg: InstallSnapshot, chunks: AsyncIterator[bytes]
    ) -> None:
        async for chunk in chunks:
            progress.append(len(chunk))
            if len(progress) == 2:
                under_way.set()

    def on_messages(peer: int, batch: list[tuple[int, Message]]) -> None:
        seen_at.append(len(progress))

    cfg = {"snapshot_chunk_bytes": CHUNK, "snapshot_window_chunks": 128}
    one = Endpoint(config(1, **cfg))
    two = Endpoint(config(2, **cfg))
    two.set_snapshot_handler(install)
    two.set_message_handler(on_messages)
    await one.start()
    await two.start()
    wan = WanEmulator()
    try:
        routes = await asyncio.to_thread(routes_for, wan, {1: one.address, 2: two.address})
        wan.set_rtt([1, 2], 0.1, bandwidth_bytes_per_s=10e6 / 8)
        one.faults.redirect(2, *routes[1][2])
        one.add_peer(2, *two.address)
        message = InstallSnapshot(
            term=3,
            sender=1,
            to=2,
            snapshot=Snapshot(
                metadata=SnapshotMetadata(
                    index=42, term=3, conf_state=ConfState(voters=frozenset({1, 2}))
                ),
                data=data,
            ),
        )
        stream = asyncio.create_task(one.send_snapshot(9, message))
        async with asyncio.timeout(30):
            await under_way.wait()
        one.send(7, Heartbeat(term=3, sender=1, to=2, commit=0))
        await stream
        assert len(progress) == total
        assert seen_at, "the heartbeat never arrived"
        assert seen_at[0] <= total // 2  # long before the end
        assert one.stats().snapshot_chunks_in_flight_max <= 8  # of 128 credits
    finally:
        await one.close()
        await two.close()
        wan.close()
