"""Mutual TLS: peers with certificates from the cluster CA connect; a peer whose
certificate another CA signed is refused on both sides and counted."""

from __future__ import annotations

import asyncio
import logging

import pytest

from copycat._net import is_loopback
from copycat.transport import DevCerts, Endpoint, TLSConfig, TransportConfig
from tests.transport.conftest import Collector, append, config, endpoints, eventually


@pytest.mark.asyncio
async def test_mutual_tls_with_the_cluster_ca_carries_messages_and_requests(
    certs: DevCerts,
) -> None:
    inbox = Collector()

    async def whoami(peer: int, body: bytes) -> bytes:
        return str(peer).encode()

    cfgs = (config(1, tls=certs.tls(1)), config(2, tls=certs.tls(2)), config(3, tls=certs.tls(3)))
    async with endpoints(*cfgs) as (a, b, c):
        b.set_message_handler(inbox)
        b.register_request_handler("whoami", whoami)
        for i in range(500):
            a.send(i % 3, append(1, 2, i))
            c.send(i % 3, append(3, 2, i))
        await inbox.wait(1000)
        assert [m.prev_index for p, _, m in inbox.items if p == 1] == list(range(500))
        assert await a.request(2, "whoami") == b"1"
        assert await c.request(2, "whoami") == b"3"
        for ep in (a, b, c):
            for conn in ep.connections:
                assert conn.transport is not None
                assert conn.transport.get_extra_info("ssl_object") is not None
        assert b.stats().refused_total == 0


@pytest.mark.asyncio
async def test_a_certificate_from_another_ca_is_refused(
    certs: DevCerts, rogue_certs: DevCerts, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Collector()
    good = config(2, tls=certs.tls(2))
    # Node 1 trusts the cluster CA but presents a certificate the rogue CA signed.
    rogue_tls = rogue_certs.tls(1)
    mixed = type(rogue_tls)(
        ca_file=certs.ca_file, cert_file=rogue_tls.cert_file, key_file=rogue_tls.key_file
    )
    with caplog.at_level(logging.WARNING, logger="copycat.transport"):
        async with endpoints(
            good,
            config(3, tls=certs.tls(3)),
            TransportConfig(node_id=1, cluster_name="test", tls=mixed, reconnect_initial_s=5.0),
        ) as (b, c, rogue):
            b.set_message_handler(inbox)
            rogue.send(1, append(1, 2, 0))
            c.send(1, append(3, 2, 0))  # a healthy link is unaffected
            await eventually(lambda: b.stats().refused.get("tls", 0) >= 1)
            await eventually(lambda: rogue.stats().dial_failures >= 1)
            await inbox.wait(1)
            await asyncio.sleep(0.05)
            assert [p for p, _, _ in inbox.items] == [3]
            assert rogue.peer_status(2) is not None
            assert not rogue.peer_status(2).connected  # type: ignore[union-attr]
    assert any("TLS handshake failed" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_plain_tcp_dialer_is_refused_by_a_tls_node(certs: DevCerts) -> None:
    async with endpoints(config(2, tls=certs.tls(2))) as (b,):
        plain = Endpoint(TransportConfig(node_id=1, cluster_name="test", reconnect_initial_s=5.0))
        await plain.start()
        try:
            plain.add_peer(2, *b.address)
            plain.send(1, append(1, 2, 0))
            await eventually(lambda: plain.stats().dial_failures >= 1)
            await eventually(lambda: b.stats().refused.get("tls", 0) >= 1)
        finally:
            await plain.close()


def test_plain_tcp_is_only_quiet_on_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.1.2.3")
    assert not is_loopback("node1.example")


def _bound(certs: DevCerts, node_id: int, cert_of: int | None = None) -> TLSConfig:
    """Node `node_id`'s TLS settings with `bind_node_id`, presenting the certificate of
    node `cert_of` (its own by default)."""
    cert, key = certs.nodes[node_id if cert_of is None else cert_of]
    return TLSConfig(ca_file=certs.ca_file, cert_file=cert, key_file=key, bind_node_id=True)


@pytest.mark.asyncio
async def test_bound_node_ids_connect_when_certificates_name_them(certs: DevCerts) -> None:
    inbox = Collector()
    async with endpoints(config(1, tls=_bound(certs, 1)), config(2, tls=_bound(certs, 2))) as (
        a,
        b,
    ):
        b.set_message_handler(inbox)
        a.send(1, append(1, 2, 0))
        await inbox.wait(1)
        assert b.stats().refused_total == 0


@pytest.mark.asyncio
async def test_a_node_claiming_another_id_than_its_certificate_is_refused(
    certs: DevCerts,
) -> None:
    """Node 1 holds node 3's valid certificate: with `bind_node_id`, node 2 refuses it
    when it dials (acceptor side), and refuses to talk to it when node 2 dials it."""
    inbox = Collector()
    posing = TransportConfig(
        node_id=1, cluster_name="test", tls=_bound(certs, 1, cert_of=3), reconnect_initial_s=5.0
    )
    async with endpoints(config(2, tls=_bound(certs, 2)), posing) as (b, impostor):
        b.set_message_handler(inbox)
        impostor.set_message_handler(inbox)
        impostor.send(1, append(1, 2, 0))
        await eventually(lambda: b.stats().refused.get("certificate", 0) >= 1)
        b.send(1, append(2, 1, 0))
        await eventually(lambda: b.stats().refused.get("certificate", 0) >= 2)
        await asyncio.sleep(0.05)
        assert inbox.items == []
