"""The dialer checks the acceptor's handshake reply (docs/wire.md, "Connection and
handshake": "The dialer checks the reply the same way (version, cluster name, node id,
codec)"). A rogue server answers a good node's dial with a well-formed reply that is
wrong in one field; the good node must refuse it: its request fails with
`PeerUnreachableError`, its queued message is dropped and reported, the refusal is
counted under its reason and logged, and the rogue receives no frame at all."""

from __future__ import annotations

import logging

import pytest

from copycat.errors import PeerUnreachableError
from copycat.transport import Endpoint
from copycat.transport._codec import decode_request
from copycat.transport._frames import PROTOCOL_VERSION, FrameKind
from tests.transport._rogue import ROGUE_ANSWER, RogueServer, reply
from tests.transport.conftest import append, config, eventually

GOOD_ID = 3
ROGUE_ID = 2
"""Below GOOD_ID, so the good node dials only when it has something to send."""

REFUSALS = {
    "another cluster": (reply(cluster="other"), "cluster_name", "peer is in cluster 'other'"),
    "another node id": (
        reply(node=7),
        "node_id",
        f"dialed node {ROGUE_ID} but node 7 answered",
    ),
    "another version": (
        reply(version=PROTOCOL_VERSION + 1),
        "version",
        f"peer answered with protocol version {PROTOCOL_VERSION + 1}",
    ),
    "a codec not offered": (reply(compression="zstd"), "bad_handshake", "we did not offer"),
}


def _good_node() -> Endpoint:
    # One dial per test: the backoff after a failure outlasts the test.
    return Endpoint(config(GOOD_ID, reconnect_initial_s=30.0, reconnect_max_s=30.0))


@pytest.mark.asyncio
async def test_the_rogue_is_a_working_peer_when_its_reply_is_right() -> None:
    """Control: with a correct reply the same rogue server gets the message and answers
    the request, so the refusals below are the dialer's checks, not a broken rogue."""
    async with RogueServer(reply()) as rogue:
        good = _good_node()
        await good.start()
        try:
            good.add_peer(ROGUE_ID, *rogue.address)
            good.send(1, append(GOOD_ID, ROGUE_ID, 0))
            assert await good.request(ROGUE_ID, "ping", b"x", timeout_s=5.0) == ROGUE_ANSWER
            await eventually(lambda: len(rogue.frames) >= 2)
            stats = good.stats()
            assert stats.connections_dialed == 1
            assert stats.refused_total == 0
        finally:
            await good.close()
    kinds = [kind for kind, _ in rogue.frames]
    assert kinds[:2] == [FrameKind.MESSAGES, FrameKind.REQUEST]
    assert decode_request(rogue.frames[1][1])[1:] == ("ping", b"x")


@pytest.mark.asyncio
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_the_dialer_refuses_a_reply_that_fails_its_checks(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    answer, reason, why = REFUSALS[case]
    unreachable: list[int] = []
    with caplog.at_level(logging.WARNING, logger="copycat.transport"):
        async with RogueServer(answer) as rogue:
            good = _good_node()
            good.set_unreachable_handler(lambda peer, _groups: unreachable.append(peer))
            await good.start()
            try:
                good.add_peer(ROGUE_ID, *rogue.address)
                # Both wait for the same (only) dial: the message is queued, the request
                # waits for a connection.
                good.send(1, append(GOOD_ID, ROGUE_ID, 0))
                with pytest.raises(PeerUnreachableError) as raised:
                    await good.request(ROGUE_ID, "ping", b"x", timeout_s=1.0)
                await eventually(lambda: good.stats().dial_failures >= 1)
                await eventually(lambda: bool(unreachable))
                stats = good.stats()
            finally:
                await good.close()
    assert raised.value.peer == ROGUE_ID
    assert stats.connections_dialed == 0
    assert dict(stats.refused) == {reason: 1}
    assert stats.dial_failures == 1
    assert stats.requests_sent == 0
    assert stats.messages_sent == 0
    assert unreachable == [ROGUE_ID]
    # The rogue heard the good node's hello (addressed to node 2) and nothing after it.
    assert [(h["cluster"], h["node"], h["peer"]) for h in rogue.hellos] == [
        ("test", GOOD_ID, ROGUE_ID)
    ]
    assert rogue.frames == []
    logged = [r.getMessage() for r in caplog.records]
    assert any("HandshakeError" in m and why in m for m in logged), logged
