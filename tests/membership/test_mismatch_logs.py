"""A node that cannot join because its peer is of another cluster or holds other gossip keys
says so by name, and so does the peer (issue 10). In one process over the in-memory gossip
layer of fakegossip.py, which refuses mismatched joins the way kinship 0.4 does (found by
experiment, see its header); test_processes.py checks the same lines over real kinship.
Every wait is bounded; no timing is asserted."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING

import pytest

from copycat.membership import Membership, MembershipConfig

from .fakegossip import FakeGossip, FakeNetwork

if TYPE_CHECKING:
    from collections.abc import Callable

    from copycat.membership._gossip import GossipMember

pytestmark = pytest.mark.asyncio

WAIT_S = 10.0
LOGGER = "copycat.membership"


def address(node_id: int) -> str:
    return f"127.0.0.1:{17000 + node_id}"  # a name only: the fake network binds nothing


def key_id(key: str) -> str:
    return hashlib.sha256(base64.b64decode(key)).hexdigest()[:8]


def make(
    net: FakeNetwork,
    node_id: int,
    *,
    cluster: str,
    keys: tuple[str, ...] = (),
    peers: tuple[str, ...] = (),
) -> Membership:
    config = MembershipConfig(
        node_id=node_id,
        gossip_port=0,
        cluster_name=cluster,
        encryption_keys=keys,
        peers_to_contact=peers,
        anti_entropy_interval_s=0.05,  # the round that checks the refused-packet counters
        transport_address=f"127.0.0.1:{9000 + node_id}",
    )
    return Membership(
        config,
        gossip_factory=lambda c, meta: FakeGossip(
            net,
            c.gossip_name,
            meta,
            cluster=c.cluster_name,
            keys=[key_id(str(k)) for k in c.encryption_keys],
            address=address(c.node_id),
        ),
    )


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.01)


def logged(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER
        and r.levelno == logging.WARNING
        and all(p in r.getMessage() for p in parts)
    ]


async def test_other_cluster_name_is_logged_by_the_joiner_and_the_receiver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    net = FakeNetwork(seed=21)
    receiver = make(net, 1, cluster="alpha")
    joiner = make(net, 2, cluster="beta", peers=(address(1),))
    await receiver.start()
    await joiner.start()
    try:
        await until(lambda: bool(logged(caplog, "refused or ignored")), "the joiner's warning")
        [said] = logged(caplog, "refused or ignored")
        assert f"peer {address(1)} " in said
        assert "cluster name or gossip keys" in said
        assert "cluster 'beta'" in said
        assert "no gossip keys" in said

        await until(lambda: bool(logged(caplog, "could not be decoded")), "the receiver's warning")
        [heard] = logged(caplog, "could not be decoded")
        assert "(decode_errors)" in heard
        assert "another cluster" in heard
        assert "cluster 'alpha'" in heard
        assert not logged(caplog, "no answer from")
        assert joiner.view().node_ids == (2,)
        assert receiver.view().node_ids == (1,)
    finally:
        await joiner.close()
        await receiver.close()


async def test_other_gossip_keys_are_logged_by_fingerprint_never_by_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ours, theirs = new_key(), new_key()
    net = FakeNetwork(seed=22)
    receiver = make(net, 1, cluster="alpha", keys=(theirs,))
    joiner = make(net, 2, cluster="alpha", keys=(ours,), peers=(address(1),))
    await receiver.start()
    await joiner.start()
    try:
        await until(lambda: bool(logged(caplog, "refused or ignored")), "the joiner's warning")
        [said] = logged(caplog, "refused or ignored")
        assert f"peer {address(1)} " in said
        assert "cluster name or gossip keys" in said
        assert "cluster 'alpha'" in said
        assert f"gossip key ids {key_id(ours)}" in said

        await until(
            lambda: bool(logged(caplog, "could not be decrypted")), "the receiver's warning"
        )
        [heard] = logged(caplog, "could not be decrypted")
        assert "(decrypt_failures)" in heard
        assert "other gossip keys" in heard
        assert f"gossip key ids {key_id(theirs)}" in heard
        for key in (ours, theirs):
            assert key not in caplog.text
            assert base64.b64decode(key).hex() not in caplog.text
    finally:
        await joiner.close()
        await receiver.close()


async def test_a_dead_peer_is_told_apart_from_a_mismatched_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    net = FakeNetwork(seed=23)
    receiver = make(net, 1, cluster="alpha")
    joiner = make(net, 2, cluster="beta", peers=(address(1), address(2), address(9)))
    await receiver.start()
    await joiner.start()
    try:
        await until(lambda: bool(logged(caplog, "no answer from")), "the joiner's warning")
        [silent] = logged(caplog, "no answer from")
        assert f"peer {address(9)} (down or unreachable)" in silent
        assert "cluster 'beta'" in silent
        await until(lambda: bool(logged(caplog, "refused or ignored")), "the mismatch warning")
        [refused] = logged(caplog, "refused or ignored")
        assert address(1) in refused
        assert not logged(caplog, address(2))  # this node's own address is skipped
    finally:
        await joiner.close()
        await receiver.close()


async def test_both_warnings_are_rate_limited_while_the_joiner_keeps_retrying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    net = FakeNetwork(seed=24)
    receiver = make(net, 1, cluster="alpha")
    joiner = make(net, 2, cluster="beta", peers=(address(1),))
    await receiver.start()
    await joiner.start()
    try:
        await until(lambda: bool(logged(caplog, "could not be decoded")), "the receiver's warning")
        await until(lambda: bool(logged(caplog, "refused or ignored")), "the joiner's warning")
        gossip = receiver._gossip
        assert isinstance(gossip, FakeGossip)
        refused = gossip.decode_errors
        for _ in range(3):  # more refused joins, more probes and more checks
            await joiner._gossip.join([address(1)])
            await joiner._explain_unanswered([address(1)])
            receiver._anti_entropy_round()
        assert gossip.decode_errors >= refused + 3
        assert len(logged(caplog, "could not be decoded")) == 1
        assert len(logged(caplog, "refused or ignored")) == 1
    finally:
        await joiner.close()
        await receiver.close()


async def test_peers_to_contact_not_seen_live_are_joined_again() -> None:
    """Two halves of a cluster that came up apart (every node restarted during a
    partition) never meet through SWIM, which probes only the members it knows: the node
    joins again, every `reconnect_interval_s`, the peers to contact it does not see live
    (sim seed 64 before the fix: two gossip clusters for good, groups never repaired)."""
    net = FakeNetwork(seed=5)
    joins: list[list[str]] = []

    class Apart(FakeGossip):
        def members(self) -> list[GossipMember]:
            return [self.local()]  # the other half is out of sight

        async def join(self, peers: list[str]) -> int:
            joins.append(sorted(peers))
            return 1  # the first join reached someone: no rejoin loop

    config = MembershipConfig(
        node_id=1,
        gossip_port=0,
        cluster_name="alpha",
        peers_to_contact=(address(2), address(3)),
        reconnect_interval_s=0.05,
        transport_address="127.0.0.1:9001",
    )
    node = Membership(
        config,
        gossip_factory=lambda c, meta: Apart(net, c.gossip_name, meta, address=address(1)),
    )
    await node.start()
    try:
        await until(lambda: len(joins) >= 3, "two joins after the first")
        assert joins[1] == [address(2), address(3)]
    finally:
        await node.close()
