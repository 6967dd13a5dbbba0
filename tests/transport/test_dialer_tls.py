"""The dialing side of mutual TLS verifies the server: a node that dials a peer whose
certificate another CA signed refuses it during the TLS handshake (docs/wire.md:
"both sides present a certificate signed by the cluster CA and verify the other's").

The rogue is a real endpoint of the same cluster that trusts the cluster CA (so it
accepts the good node's certificate and would serve it) but presents a certificate of
another CA. Only the good node's own check of the server certificate stands between
it and the rogue."""

from __future__ import annotations

import logging

import pytest

from copycat.errors import PeerUnreachableError
from copycat.transport import DevCerts, Endpoint, TLSConfig
from tests.transport.conftest import Collector, append, config, eventually

GOOD_ID = 3
ROGUE_ID = 2
"""Below GOOD_ID, so the good node dials only when it has something to send."""


def _rogue(certs: DevCerts, server_certs: DevCerts) -> Endpoint:
    cert, key = server_certs.nodes[ROGUE_ID]
    return Endpoint(
        config(ROGUE_ID, tls=TLSConfig(ca_file=certs.ca_file, cert_file=cert, key_file=key))
    )


def _good(certs: DevCerts, *, check_hostname: bool = False) -> Endpoint:
    cert, key = certs.nodes[GOOD_ID]
    tls = TLSConfig(
        ca_file=certs.ca_file, cert_file=cert, key_file=key, check_hostname=check_hostname
    )
    # One dial per test: the backoff after a failure outlasts the test.
    return Endpoint(config(GOOD_ID, tls=tls, reconnect_initial_s=30.0, reconnect_max_s=30.0))


async def _echo(peer: int, body: bytes) -> bytes:
    return body


@pytest.mark.asyncio
async def test_control_the_same_server_with_a_cluster_certificate_is_reached(
    certs: DevCerts,
) -> None:
    """Control: the setup below works when the server's certificate is the cluster's,
    so its refusal is the dialer verifying the certificate and nothing else."""
    inbox = Collector()
    server, good = _rogue(certs, certs), _good(certs, check_hostname=True)
    server.set_message_handler(inbox)
    server.register_request_handler("echo", _echo)
    await server.start()
    await good.start()
    try:
        good.add_peer(ROGUE_ID, *server.address)
        good.send(1, append(GOOD_ID, ROGUE_ID, 0))
        assert await good.request(ROGUE_ID, "echo", b"hi", timeout_s=5.0) == b"hi"
        await inbox.wait(1)
        assert good.stats().refused_total == 0
    finally:
        await good.close()
        await server.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("check_hostname", [False, True], ids=["ca-only", "check-hostname"])
async def test_a_dialer_refuses_a_server_certificate_from_another_ca(
    certs: DevCerts,
    rogue_certs: DevCerts,
    check_hostname: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox = Collector()
    unreachable: list[int] = []
    rogue, good = _rogue(certs, rogue_certs), _good(certs, check_hostname=check_hostname)
    rogue.set_message_handler(inbox)
    rogue.register_request_handler("echo", _echo)
    good.set_unreachable_handler(lambda peer, _groups: unreachable.append(peer))
    with caplog.at_level(logging.WARNING, logger="copycat.transport"):
        await rogue.start()
        await good.start()
        try:
            good.add_peer(ROGUE_ID, *rogue.address)
            good.send(1, append(GOOD_ID, ROGUE_ID, 0))
            with pytest.raises(PeerUnreachableError) as raised:
                await good.request(ROGUE_ID, "echo", b"hi", timeout_s=1.0)
            await eventually(lambda: good.stats().dial_failures >= 1)
            await eventually(lambda: bool(unreachable))
            stats, rogue_stats = good.stats(), rogue.stats()
        finally:
            await good.close()
            await rogue.close()
    assert raised.value.peer == ROGUE_ID
    assert dict(stats.refused) == {"tls": 1}
    assert stats.connections_dialed == 0
    assert stats.requests_sent == 0
    assert unreachable == [ROGUE_ID]
    assert rogue_stats.connections_accepted == 0
    assert rogue_stats.requests_served == 0
    assert rogue_stats.messages_received == 0
    assert inbox.items == []
    logged = [r.getMessage() for r in caplog.records]
    assert any("HandshakeError" in m and "certificate verify failed" in m for m in logged), logged
