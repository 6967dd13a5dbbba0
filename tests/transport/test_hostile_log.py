"""Hostile input is "logged once per peer per interval" (STYLE.md section 6; docs/wire.md:
"logged at most once per peer address and reason per `hostile_log_interval_s`"), while
every refusal is still counted, and one peer's refusals never silence another's."""

from __future__ import annotations

import asyncio
import logging

import pytest

from copycat.transport import Endpoint
from copycat.transport._endpoint import _HostileLog
from tests.transport._rogue import RogueServer
from tests.transport.conftest import config, eventually

REFUSALS = 20
NOT_COPYCAT = b"HTTP/1.1 400 Bad Request\r\n\r\n"
"""What a rogue server answers a hello with: not our protocol (`bad_magic`)."""


def _lines(caplog: pytest.LogCaptureFixture, who: str, reason: str) -> list[str]:
    return [
        m
        for r in caplog.records
        if (m := r.getMessage()).startswith(f"refused input from {who} ") and f"[{reason}]" in m
    ]


@pytest.mark.asyncio
async def test_repeated_refusals_from_one_peer_log_one_line_per_reason_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Node 1 keeps redialing two rogue servers that answer its hello with bytes that
    are not CopyCat: each of its 20+ refusals per peer is counted, but each peer gets
    exactly one line per reason (`bad_magic`, and `dial` for the failed dial) within
    the interval."""
    cfg = config(1, reconnect_initial_s=0.005, reconnect_max_s=0.005, hostile_log_interval_s=3600.0)
    async with RogueServer(NOT_COPYCAT) as rogue2, RogueServer(NOT_COPYCAT) as rogue3:
        good = Endpoint(cfg)
        await good.start()
        try:
            with caplog.at_level(logging.WARNING, logger="copycat.transport"):
                # Node 1 has the lower id: it dials each peer eagerly and redials after
                # every failure.
                good.add_peer(2, *rogue2.address)
                await eventually(lambda: good.stats().refused.get("bad_magic", 0) >= REFUSALS)
                first = good.stats().refused["bad_magic"]
                good.add_peer(3, *rogue3.address)
                await eventually(lambda: len(rogue3.hellos) >= REFUSALS)
                await eventually(lambda: good.stats().dial_failures >= first + REFUSALS)
        finally:
            await good.close()
    assert len(rogue2.hellos) >= REFUSALS
    host2, port2 = rogue2.address
    host3, port3 = rogue3.address
    who2, who3 = f"node 2 ({host2}:{port2})", f"node 3 ({host3}:{port3})"
    assert len(_lines(caplog, who2, "bad_magic")) == 1
    assert len(_lines(caplog, who2, "dial")) == 1
    # Another peer's refusals are logged although node 2's are being suppressed.
    assert len(_lines(caplog, who3, "bad_magic")) == 1
    assert len(_lines(caplog, who3, "dial")) == 1


@pytest.mark.asyncio
async def test_a_client_that_reconnects_from_new_ports_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that is not CopyCat connects 20 times, each time from a new port, and
    sends bytes that are no CopyCat hello: every refusal is counted, one line is logged
    (the port is not part of who the client is)."""
    good = Endpoint(config(1, hostile_log_interval_s=3600.0))
    await good.start()
    try:
        host, port = good.address
        with caplog.at_level(logging.WARNING, logger="copycat.transport"):
            for _ in range(REFUSALS):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(NOT_COPYCAT)
                await writer.drain()
                await reader.read()  # the endpoint closes the connection
                writer.close()
            await eventually(lambda: good.stats().refused.get("bad_magic", 0) >= REFUSALS)
    finally:
        await good.close()
    lines = [m for m in _records(caplog) if m.startswith("refused input from ")]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"refused input from {host}:")
    assert "[bad_magic]" in lines[0]


def _records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "copycat.transport"]


def test_the_limit_is_per_peer_and_reason_and_reports_what_it_suppressed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`_HostileLog` with an explicit clock: the first refusal of a (peer, reason) is
    logged, the next ones within the interval are not, another peer or reason is, and
    the first line after the interval says how many were suppressed."""
    log = _HostileLog(60.0)
    with caplog.at_level(logging.WARNING, logger="copycat.transport"):
        for i in range(REFUSALS):
            log.log(100.0 + i, "10.0.0.1:7000", "bad_magic", "not a CopyCat handshake")
        assert len(_records(caplog)) == 1
        log.log(130.0, "10.0.0.2:7000", "bad_magic", "not a CopyCat handshake")
        log.log(130.0, "10.0.0.1:7000", "frame_too_large", "frame of 1 GiB")
        assert len(_records(caplog)) == 3
        log.log(159.9, "10.0.0.1:7000", "bad_magic", "not a CopyCat handshake")
        assert len(_records(caplog)) == 3
        log.log(160.0, "10.0.0.1:7000", "bad_magic", "not a CopyCat handshake")
        log.log(161.0, "10.0.0.1:7001", "bad_magic", "not a CopyCat handshake")  # same host
    lines = _records(caplog)
    assert lines == [
        "refused input from 10.0.0.1:7000 [bad_magic]: not a CopyCat handshake",
        "refused input from 10.0.0.2:7000 [bad_magic]: not a CopyCat handshake",
        "refused input from 10.0.0.1:7000 [frame_too_large]: frame of 1 GiB",
        "refused input from 10.0.0.1:7000 [bad_magic]: not a CopyCat handshake"
        f" ({REFUSALS} more since the last report)",
    ]
