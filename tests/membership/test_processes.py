"""Real gossip (kinship) between real processes on 127.0.0.1, one node per process
(`python -m copycat.membership._agent`), ephemeral ports.

Each test kills exactly the processes it started (by their pids, in `finally`); every wait
is bounded by a generous safety timeout. No timing is asserted: how fast the directory
converges is measured by benchmarks/membership.py (`directory_converge_s`,
`directory_role_change_s`)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

import pytest

from copycat.membership._agent import AgentProcess

pytestmark = [pytest.mark.asyncio, pytest.mark.chaos]

SAFETY_S = 20.0


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class Agents:
    """The agent processes one test started; `stop()` kills every one of them."""

    def __init__(self) -> None:
        self.all: list[AgentProcess] = []

    async def spawn(self, node_id: int, *args: str) -> AgentProcess:
        agent = await AgentProcess.spawn("--node-id", str(node_id), *args)
        self.all.append(agent)
        return agent

    async def stop(self) -> None:
        await asyncio.gather(*(a.kill() for a in self.all), return_exceptions=True)


def port_of(agent: AgentProcess) -> str:
    return agent.gossip_address.rpartition(":")[2]


async def wait_members(agents: list[AgentProcess], nodes: list[int]) -> None:
    results = await asyncio.gather(
        *(
            a.call("wait_members", nodes=nodes, timeout=SAFETY_S, timeout_s=SAFETY_S + 5)
            for a in agents
        )
    )
    for agent, result in zip(agents, results, strict=True):
        assert isinstance(result, dict)
        assert result["members"] == sorted(nodes), f"node {agent.node_id} sees {result['members']}"


async def located(
    agent: AgentProcess,
    node: int,
    prefix: str,
    count: int,
    *,
    wait_s: float = SAFETY_S,
    **kw: object,
) -> dict:
    result = await agent.call(
        "wait_located",
        node=node,
        prefix=prefix,
        count=count,
        timeout=wait_s,
        timeout_s=SAFETY_S + 5,
        **kw,
    )
    assert isinstance(result, dict)
    return result


async def events_of(agent: AgentProcess) -> list[list]:
    result = await agent.call("events")
    assert isinstance(result, list)
    return result


async def counters(agent: AgentProcess) -> dict:
    status = await agent.call("status")
    assert isinstance(status, dict)
    return status["counters"]


async def test_five_processes_join_fail_restart_rotate_keys_and_refuse_a_wrong_key() -> None:
    key1, key2 = new_key(), new_key()
    agents = Agents()
    try:
        first = await agents.spawn(1, "--key", key1)
        rest = [
            await agents.spawn(i, "--key", key1, "--peer", first.gossip_address)
            for i in range(2, 6)
        ]
        nodes = [first, *rest]
        await wait_members(nodes, [1, 2, 3, 4, 5])

        # Directories: nodes 1 and 2 host groups; node 5's first run hosts some too.
        await first.call("publish", prefix="a", count=300)
        await rest[0].call("publish", prefix="b", count=200)
        victim = rest[3]
        await victim.call("publish", prefix="old", count=50)
        await located(first, 5, "old", 50)

        # kill -9 node 5: every live node reports it failed.
        victim_port, victim_epoch = port_of(victim), victim.epoch
        await victim.kill()
        live = nodes[:4]
        await wait_members(live, [1, 2, 3, 4])
        for agent in live:
            kinds = {(e[1], e[2]) for e in await events_of(agent)}
            assert ("failed", 5) in kinds, f"node {agent.node_id} did not report node 5 failed"
            assert (await located(agent, 5, "old", 50, wait_s=0))["found"] == 0

        # Restart node 5 on its port: a new run, which gets every directory in full.
        reborn = await agents.spawn(
            5, "--key", key1, "--port", victim_port, "--peer", first.gossip_address
        )
        assert reborn.epoch > victim_epoch
        nodes = [*live, reborn]
        await wait_members(nodes, [1, 2, 3, 4, 5])
        assert (await located(reborn, 1, "a", 300))["found"] == 300
        assert (await located(reborn, 2, "b", 200))["found"] == 200
        assert (await counters(reborn))["full_syncs"] >= 4
        status = await first.call("status")
        assert isinstance(status, dict)
        assert status["members"]["5"] in ("alive", "suspect")

        # Rotate the key across the cluster, one step everywhere before the next.
        rotation_start = time.time()
        for action, key in (("install", key2), ("use", key2), ("remove", key1)):
            ids = await asyncio.gather(*(a.call("key", action=action, key=key) for a in nodes))
            assert all(isinstance(i, list) for i in ids)
        await asyncio.sleep(3.0)  # 15 probe rounds of the local preset
        await wait_members(nodes, [1, 2, 3, 4, 5])
        for agent in nodes:
            failed = [
                e for e in await events_of(agent) if e[1] == "failed" and e[0] >= rotation_start
            ]
            assert failed == [], f"node {agent.node_id} declared {failed} failed during rotation"
            status = await agent.call("status")
            assert isinstance(status, dict)
            assert len(status["key_ids"]) == 1

        # A node with a wrong key cannot join.
        before = [(await counters(a))["decrypt_failures"] for a in nodes]
        intruder = await agents.spawn(6, "--key", new_key(), "--peer", first.gossip_address)
        await asyncio.sleep(3.0)
        status = await intruder.call("status")
        assert isinstance(status, dict)
        assert list(status["members"]) == ["6"]
        for agent in nodes:
            status = await agent.call("status")
            assert isinstance(status, dict)
            assert "6" not in status["members"]
        after = [(await counters(a))["decrypt_failures"] for a in nodes]
        assert sum(after) > sum(before)
    finally:
        await agents.stop()


async def test_directory_of_1000_groups_converges_and_deltas_cost_the_change() -> None:
    agents = Agents()
    try:
        host = await agents.spawn(1)
        others = [await agents.spawn(i, "--peer", host.gossip_address) for i in (2, 3, 4)]
        await wait_members([host, *others], [1, 2, 3, 4])
        # A directory larger than the changes to come.
        await host.call("publish", prefix="bg", count=4000)
        for agent in others:
            assert (await located(agent, 1, "bg", 4000))["found"] == 4000
        await asyncio.sleep(0.5)  # let every pull settle before measuring
        before = [(await counters(a))["sync_bytes_received"] for a in others]

        published = await host.call("publish", prefix="g", count=1000)
        assert isinstance(published, dict)
        results = await asyncio.gather(*(located(a, 1, "g", 1000) for a in others))
        for result in results:
            assert result["found"] == 1000
        await asyncio.sleep(0.5)
        mid = [(await counters(a))["sync_bytes_received"] for a in others]

        changed = await host.call("publish", prefix="g", count=1000, role="learner")
        assert isinstance(changed, dict)
        results = await asyncio.gather(*(located(a, 1, "g", 1000, role="learner") for a in others))
        for result in results:
            assert result["found"] == 1000
        await asyncio.sleep(0.5)
        after = [(await counters(a))["sync_bytes_received"] for a in others]

        small = await host.call("publish", prefix="g", count=10, role="voter")
        assert isinstance(small, dict)
        for agent in others:
            assert (await located(agent, 1, "g", 10, role="voter"))["found"] == 10
        await asyncio.sleep(0.5)
        last = [(await counters(a))["sync_bytes_received"] for a in others]

        for b, m, a, z in zip(before, mid, after, last, strict=True):
            new_groups, role_change, ten = m - b, a - m, z - a
            # 1,000 changes of a 5,000-entry directory: about a fifth of it, not all of it.
            assert role_change < 0.5 * (b + new_groups), (role_change, b)
            assert 0.5 * new_groups < role_change < 2 * new_groups, (new_groups, role_change)
            assert ten < role_change / 20, (ten, role_change)
    finally:
        await agents.stop()


async def test_a_node_whose_event_loop_blocks_for_3_s_is_not_declared_failed() -> None:
    agents = Agents()
    try:
        first = await agents.spawn(1)
        others = [await agents.spawn(i, "--peer", first.gossip_address) for i in (2, 3)]
        nodes = [first, *others]
        await wait_members(nodes, [1, 2, 3])
        sleeper = others[1]
        blocked = await sleeper.call("block", seconds=3.0, timeout_s=SAFETY_S)
        assert isinstance(blocked, dict)
        assert blocked["blocked_s"] >= 3.0
        await asyncio.sleep(2.0)  # past the local preset's suspicion timeout
        for agent in nodes[:2]:
            gone = [e for e in await events_of(agent) if e[1] in ("failed", "left") and e[2] == 3]
            assert gone == [], f"node {agent.node_id} saw node 3 {gone}"
        await wait_members(nodes, [1, 2, 3])
        # And its directory still syncs once the loop runs again.
        await sleeper.call("publish", prefix="s", count=10)
        assert (await located(first, 3, "s", 10))["found"] == 10
    finally:
        await agents.stop()


async def warned(agent: AgentProcess, *parts: str) -> str:
    """The first warning of `agent` holding every part, waited for at most SAFETY_S."""
    deadline = time.monotonic() + SAFETY_S
    while True:
        messages = await agent.call("warnings")
        assert isinstance(messages, list)
        for message in messages:
            if all(part in message for part in parts):
                return str(message)
        if time.monotonic() > deadline:
            pytest.fail(f"node {agent.node_id} never warned {parts}: {messages}")
        await asyncio.sleep(0.1)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_cluster_name_and_key_mismatches_are_logged_by_name_on_both_sides() -> None:
    """Issue 10 over real kinship: a joiner whose peer is of another cluster or holds other
    keys names the peer and the likely cause, a dead peer is told apart, and each receiver
    names the counter of the packets it refused. No key is ever logged."""
    key, other_key = new_key(), new_key()
    dead = f"127.0.0.1:{closed_port()}"
    agents = Agents()
    try:
        fast = ("--anti-entropy-s", "0.2")  # the round that checks the refused counters
        plain = await agents.spawn(1, "--cluster", "alpha", *fast)
        keyed = await agents.spawn(2, "--cluster", "alpha", "--key", key, *fast)
        other_cluster = await agents.spawn(3, "--cluster", "beta", "--peer", plain.gossip_address)
        other_keys = await agents.spawn(
            4, "--cluster", "alpha", "--key", other_key, "--peer", keyed.gossip_address
        )
        nobody = await agents.spawn(5, "--cluster", "alpha", "--peer", dead)
        status = await other_keys.call("status")
        assert isinstance(status, dict)
        [other_key_id] = status["key_ids"]

        said = await warned(other_cluster, f"peer {plain.gossip_address} refused or ignored")
        assert "cluster name or gossip keys" in said
        assert "cluster 'beta'" in said
        said = await warned(other_keys, f"peer {keyed.gossip_address} refused or ignored")
        assert "cluster name or gossip keys" in said
        assert f"cluster 'alpha', gossip key ids {other_key_id}" in said
        await warned(nobody, f"no answer from peer {dead} (down or unreachable)")

        await warned(plain, "could not be decoded", "(decode_errors)", "cluster 'alpha'")
        await warned(keyed, "could not be decrypted", "(decrypt_failures)", "cluster 'alpha'")

        for agent in agents.all:
            messages = await agent.call("warnings")
            assert isinstance(messages, list)
            text = "\n".join(messages)
            assert key not in text
            assert other_key not in text
            if agent is not nobody:
                assert "no answer from" not in text, f"node {agent.node_id}: {text}"
    finally:
        await agents.stop()
