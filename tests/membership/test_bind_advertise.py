"""Binding one address and publishing another (issue 13, "Bind apart from advertise").

Units: `MembershipConfig.gossip_advertise` and its loopback rule, its way into kinship's
`advertise`, and how a node recognises its own address (`reachability`). Clusters: three
real nodes, in one child process (real gossip nodes never run inside pytest's process;
this module is also that process's script,
`python -m tests.membership.test_bind_advertise LIFE DATA_DIR`):

* `hosts`: each node binds the wildcard 0.0.0.0 and publishes a loopback alias of its own
  (127.0.0.11, .12, .13: Linux routes all of 127/8 to lo, so the wildcard receives on
  them); they join through the published gossip addresses (the third lists its own too),
  see each other at the published addresses, and a group of three replicas commits.
* `ports`: each node publishes a transport port that a small TCP forwarder in the child
  carries to the port the transport bound; raft traffic flows through the forwarders.

Every wait is bounded; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import sys
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from copycat.errors import ConfigError
from copycat.membership import MembershipConfig
from copycat.membership._gossip import KinshipGossip, Reachability, kinship_config
from tests.sync._subprocess import main_then_exit, run_life

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from copycat import CopyCat

pytestmark = pytest.mark.timeout(60)

KEY = base64.b64encode(bytes(range(32))).decode()
WAIT_S = 30.0
ALIASES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")


# -- MembershipConfig.gossip_advertise --------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"gossip_advertise": "127.0.0.11"}, "gossip_advertise"),
        ({"gossip_advertise": "127.0.0.11:0"}, "gossip_advertise"),
        ({"gossip_advertise": "127.0.0.11:65536"}, "gossip_advertise"),
        ({"gossip_advertise": ":7459"}, "gossip_advertise"),
        ({"gossip_advertise": 7459}, "gossip_advertise"),
        ({"gossip_advertise": "0.0.0.0:7459"}, "gossip_advertise"),
        ({"gossip_advertise": "[::]:7459"}, "gossip_advertise"),
        ({"gossip_advertise": "h" * 200 + ":7459"}, "gossip_advertise"),
        # the loopback rule judges the bind and the published address
        ({"gossip_host": "0.0.0.0", "gossip_advertise": "127.0.0.11:7459"}, "preset"),
        ({"gossip_host": "127.0.0.1", "gossip_advertise": "10.0.0.5:7459"}, "preset"),
        ({"gossip_host": "::", "gossip_advertise": "[::1]:7459"}, "preset"),
        (
            {"gossip_host": "0.0.0.0", "gossip_advertise": "127.0.0.11:7459", "preset": "lan"},
            "encryption_keys",
        ),
    ],
)
def test_gossip_advertise_rules_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        MembershipConfig(node_id=1, **fields)  # type: ignore[arg-type]
    assert info.value.field == field


def test_gossip_advertise_accepted_where_the_rule_allows() -> None:
    assert MembershipConfig(node_id=1).gossip_advertise is None
    both_loopback = MembershipConfig(node_id=1, gossip_advertise="127.0.0.11:17459")
    assert both_loopback.preset == "local"
    MembershipConfig(node_id=1, gossip_host="::1", gossip_advertise="[::1]:17459")
    MembershipConfig(
        node_id=1,
        gossip_host="0.0.0.0",
        gossip_advertise="10.0.0.5:7459",
        preset="lan",
        encryption_keys=(KEY,),
    )


def test_kinship_binds_gossip_host_and_advertises_gossip_advertise() -> None:
    config = MembershipConfig(
        node_id=1,
        gossip_host="0.0.0.0",
        gossip_port=7459,
        gossip_advertise="127.0.0.11:17459",
        preset="lan",
        encryption_keys=(KEY,),
    )
    k = kinship_config(config, {})
    assert (k.bind, k.advertise) == ("0.0.0.0:7459", "127.0.0.11:17459")
    plain = kinship_config(MembershipConfig(node_id=1, gossip_port=0), {})
    assert (plain.bind, plain.advertise) == ("127.0.0.1:0", None)
    six = MembershipConfig(
        node_id=1,
        gossip_host="::",
        gossip_advertise="[fe80::1]:7459",
        preset="lan",
        encryption_keys=(KEY,),
    )
    assert (kinship_config(six, {}).bind, kinship_config(six, {}).advertise) == (
        "[::]:7459",
        "[fe80::1]:7459",
    )


def test_kinship_refusals_name_our_fields() -> None:
    """kinship publishes IP addresses only; its error names our field, not its own."""
    named = MembershipConfig(node_id=1, gossip_advertise="localhost:17459")
    with pytest.raises(ConfigError) as info:
        kinship_config(named, {})
    assert info.value.field == "gossip_advertise"
    with pytest.raises(ConfigError) as info:
        kinship_config(replace(named, gossip_advertise=None, gossip_host="localhost"), {})
    assert info.value.field == "gossip_host"


def test_the_node_config_feeds_kinship_the_bind_and_the_published_address() -> None:
    from copycat import Config

    c = Config.lan(
        hostname="127.0.0.11",
        bind_host="0.0.0.0",
        gossip_port=7459,
        advertise_gossip_port=17459,
        gossip_keys=[KEY],
    )
    k = kinship_config(c.membership_config(1), {})
    assert (k.bind, k.advertise) == ("0.0.0.0:7459", "127.0.0.11:17459")
    assert kinship_config(Config().membership_config(1), {}).advertise is None


# -- this node's own address ------------------------------------------------------------------


def _gossip(bind: str, advertise: str | None, published: str) -> KinshipGossip:
    """A `KinshipGossip` of kinship's config for `bind` and `advertise`, whose running
    cluster is replaced by its one fact used here: `local.addr`, the address kinship
    publishes (nothing is started, no socket is opened)."""
    host, _, port = bind.rpartition(":")
    config = MembershipConfig(
        node_id=1,
        gossip_host=host,
        gossip_port=int(port),
        gossip_advertise=advertise,
        preset="lan",
        encryption_keys=(KEY,),
    )
    gossip = KinshipGossip.__new__(KinshipGossip)
    object.__setattr__(gossip, "_config", kinship_config(config, {}))
    object.__setattr__(gossip, "_cluster", SimpleNamespace(local=SimpleNamespace(addr=published)))
    return gossip


@pytest.mark.parametrize(
    ("bind", "advertise", "port", "ip", "own"),
    [
        # wildcard bind, published on an alias at another port (a forwarder in between)
        ("0.0.0.0:7459", "127.0.0.11:17459", 17459, "127.0.0.11", True),  # the published one
        ("0.0.0.0:7459", "127.0.0.11:17459", 7459, "127.0.0.1", True),  # bound, via loopback
        ("0.0.0.0:7459", "127.0.0.11:17459", 7459, "127.0.0.11", True),  # bound, via the alias
        ("0.0.0.0:7459", "127.0.0.11:17459", 17459, "127.0.0.1", False),  # the forwarder's
        ("0.0.0.0:7459", "127.0.0.11:17459", 7460, "127.0.0.11", False),
        # loopback bind published elsewhere: the published and the bound address are both own
        ("127.0.0.1:7459", "127.0.0.11:7459", 7459, "127.0.0.11", True),
        ("127.0.0.1:7459", "127.0.0.11:7459", 7459, "127.0.0.1", True),
        ("127.0.0.1:7459", "127.0.0.11:7459", 7459, "127.0.0.12", False),
        # nothing advertised, the OS picked the port: kinship publishes what it bound
        ("127.0.0.1:0", None, 40123, "127.0.0.1", True),
        ("127.0.0.1:0", None, 40124, "127.0.0.1", False),
        # advertised, bound at a port the OS picked: only the published address is known
        ("0.0.0.0:0", "127.0.0.11:17459", 17459, "127.0.0.11", True),
        ("0.0.0.0:0", "127.0.0.11:17459", 40123, "127.0.0.1", False),
    ],
)
def test_a_node_knows_its_published_and_its_bound_address(
    bind: str, advertise: str | None, port: int, ip: str, own: bool
) -> None:
    published = advertise or f"{bind.rpartition(':')[0]}:40123"
    assert _gossip(bind, advertise, published)._is_own(port, {ip}) is own


@pytest.mark.asyncio
async def test_reachability_calls_the_published_address_self() -> None:
    """`Membership` asks `reachability` why a peer to contact did not answer; its own
    published address, listed there as every node's list may, is this node."""
    gossip = _gossip("0.0.0.0:7459", "127.0.0.11:17459", "127.0.0.11:17459")
    assert await gossip.reachability("127.0.0.11:17459", 1.0) is Reachability.SELF
    assert await gossip.reachability("127.0.0.1:7459", 1.0) is Reachability.SELF


# -- clusters (in a child process) ------------------------------------------------------------


@pytest.mark.timeout(150)
def test_nodes_bound_to_the_wildcard_publish_their_own_aliases_and_commit(
    tmp_path: Path,
) -> None:
    result = run_life("tests.membership.test_bind_advertise", "hosts", str(tmp_path), tag="result")
    gossip = result["gossip"]
    assert gossip == [
        f"{host}:{port}" for host, port in zip(ALIASES, result["gossip_ports"], strict=True)
    ]
    expected_gossip = dict(zip(["1", "2", "3"], gossip, strict=True))
    for seen_by in result["views"]:
        # Every node sees all three at their published addresses: never 0.0.0.0 (the bind)
        # nor 127.0.0.1 (where a wildcard-bound socket also answers).
        assert sorted(seen_by) == ["1", "2", "3"]
        for node_id, (transport, gossip_address) in seen_by.items():
            host, _, port = transport.rpartition(":")
            assert host == ALIASES[int(node_id) - 1]
            assert int(port) > 0  # the port the OS picked (Config.local: port=0)
            assert gossip_address == expected_gossip[node_id]
    assert result["delivered"] == [["from node 2"]] * 3
    # Plain TCP off loopback is allowed, with a warning from each node's transport.
    assert result["plain_tcp_warnings"] == 3


@pytest.mark.timeout(150)
def test_a_published_transport_port_forwarded_to_the_bound_one_carries_raft(
    tmp_path: Path,
) -> None:
    result = run_life("tests.membership.test_bind_advertise", "ports", str(tmp_path), tag="result")
    for seen_by in result["views"]:
        assert seen_by == {
            str(i + 1): f"127.0.0.1:{port}" for i, port in enumerate(result["published"])
        }
    assert all(p != b for p, b in zip(result["published"], result["bound"], strict=True)), result
    assert result["delivered"] == [["from node 2"]] * 3
    # The peers know only the published ports, so every connection went through a
    # forwarder, and a leader needs one to each of its two followers.
    assert sum(result["forwarded"]) >= 2, result


# -- the child process ------------------------------------------------------------------------


def _free_port(taken: set[int]) -> int:
    """A port free for TCP and UDP on every interface (gossip binds both), not in `taken`."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("0.0.0.0", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("0.0.0.0", port))
                except OSError:
                    continue
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError("no free port")


async def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.05)


class _Counter(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__(logging.WARNING)
        self.needle = needle
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.count += 1


async def _commit_everywhere(nodes: list[CopyCat]) -> list[list[str]]:
    """Allocate a group of three replicas, subscribe on every node, propose once from
    the second, and return what each subscriber received."""
    from copycat.errors import NotEnoughNodesError, PeerUnreachableError

    await _until(lambda: all(len(n.members()) == len(nodes) for n in nodes), "all members")
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            ds = await nodes[0].allocate_data_structure(replicas=3)
            break
        except (NotEnoughNodesError, PeerUnreachableError):
            # The view can list a member a moment before the node hands its transport
            # address to the endpoint ("node 3 is not a known peer"): try again.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    received: list[list[str]] = [[] for _ in nodes]
    subs = [await node.subscribe(ds, lambda: b"") for node in nodes]

    async def consume(i: int) -> None:
        async for item in subs[i].commits():
            if isinstance(item, bytes):
                received[i].append(item.decode())

    readers = [asyncio.create_task(consume(i)) for i in range(len(nodes))]
    try:
        await subs[1].propose(b"from node 2")
        await _until(lambda: all(received), "delivered on every subscriber")
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return received


def _views(nodes: list[CopyCat]) -> list[dict[str, list[str]]]:
    return [
        {str(m.node_id): [m.transport_address, m.gossip_address] for m in node.members()}
        for node in nodes
    ]


async def _hosts_life(data_root: str) -> dict[str, object]:
    from copycat import Config, CopyCat

    warnings = _Counter("without TLS")
    logging.getLogger("copycat.transport").addHandler(warnings)
    key = base64.b64encode(os.urandom(32)).decode()
    taken: set[int] = set()
    gossip_ports = [_free_port(taken) for _ in ALIASES]
    published = [f"{host}:{port}" for host, port in zip(ALIASES, gossip_ports, strict=True)]
    # The second joins through the first's published address; the third lists all three,
    # its own included (a node must know it is itself there).
    peers = [[], published[:1], published]
    configs = [
        Config.local(
            hostname=host,
            bind_host="0.0.0.0",
            gossip_port=port,
            # Off loopback (the wildcard bind takes packets from every network): keys and
            # a preset other than "local" are required.
            gossip_preset="lan",
            gossip_keys=[key],
            peers_to_contact=peers[i],
            data_dir=os.path.join(data_root, f"n{i + 1}"),
            node_id=i + 1,
        )
        for i, (host, port) in enumerate(zip(ALIASES, gossip_ports, strict=True))
    ]
    async with contextlib.AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(CopyCat(c)) for c in configs]
        delivered = await _commit_everywhere(nodes)
        return {
            "gossip_ports": gossip_ports,
            "gossip": [n.gossip_address for n in nodes],
            "views": _views(nodes),
            "delivered": delivered,
            "plain_tcp_warnings": warnings.count,
        }


class _Forwarder:
    """Listens on 127.0.0.1 (the published port) and pipes each connection to 127.0.0.1 at
    `target` (the port the transport bound, known once the node started)."""

    def __init__(self) -> None:
        self.target: int | None = None
        self.forwarded = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.target is None:
            writer.close()  # the node is not up yet: the dialler retries
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.forwarded += 1
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass  # either side reset: the other side sees the close below
    finally:
        writer.close()


async def _ports_life(data_root: str) -> dict[str, object]:
    from copycat import Config, CopyCat

    forwarders = [_Forwarder() for _ in range(3)]
    published = [await f.start() for f in forwarders]
    async with contextlib.AsyncExitStack() as stack:
        for forwarder in forwarders:
            stack.callback(forwarder.close)
        nodes: list[CopyCat] = []
        for i, fwd in enumerate(forwarders):
            config = Config.local(
                advertise_port=published[i],  # bound: port 0, the OS picks
                peers_to_contact=[nodes[0].gossip_address] if nodes else [],
                data_dir=os.path.join(data_root, f"n{i + 1}"),
                node_id=i + 1,
            )
            node = await stack.enter_async_context(CopyCat(config))
            assert node.address == f"127.0.0.1:{published[i]}"  # what the others dial
            endpoint = node._endpoint  # test access: the port the OS picked for the bind
            assert endpoint is not None
            fwd.target = endpoint.address[1]
            nodes.append(node)
        delivered = await _commit_everywhere(nodes)
        views = _views(nodes)
        return {
            "published": published,
            "bound": [f.target for f in forwarders],
            "views": [{k: v[0] for k, v in view.items()} for view in views],
            "delivered": delivered,
            "forwarded": [f.forwarded for f in forwarders],
        }


def _main() -> None:
    import json

    life, data_root = sys.argv[1], sys.argv[2]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    body = _hosts_life if life == "hosts" else _ports_life

    async def bounded() -> dict[str, object]:
        async with asyncio.timeout(WAIT_S * 2):
            return await body(data_root)

    print("result " + json.dumps(asyncio.run(bounded())), flush=True)


if __name__ == "__main__":
    main_then_exit(_main)
