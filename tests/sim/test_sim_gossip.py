"""The simulator's SWIM (`copycat.testing.sim._gossip`): joins, crashes, partitions (two
way and one way), false suspicions, direct messages, leaves and restarts, with real
`Membership` objects over it and with the `SimGossip` directly; and the same trace from
the same seed twice. Tests 1-7 run on a plain asyncio loop with short intervals, every wait
bounded; the replay runs on the simulator's virtual clock."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import pytest

from copycat.membership import (
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberRecovered,
    Membership,
    MembershipConfig,
    MemberSuspect,
)
from copycat.membership._gossip import (
    GossipEvent,
    GossipEventKind,
    GossipState,
    PeerGoneError,
    Reachability,
)
from copycat.testing.sim._gossip import GossipNet, SimGossip
from copycat.testing.sim._loop import VirtualLoop

if TYPE_CHECKING:
    from collections.abc import Callable

    from copycat.membership import MembershipEvent

WAIT_S = 10.0
PROBE_S = 0.05
SUSPICION_S = 0.2


class Links:
    """The test's network: every link up unless cut, one way or both."""

    def __init__(self, delay_s: float = 0.002) -> None:
        self.cut_links: set[tuple[str, str]] = set()
        self.delay_s = delay_s

    def reachable(self, a: str, b: str) -> bool:
        return (a, b) not in self.cut_links

    def delay(self, a: str, b: str) -> float:
        return self.delay_s

    def cut(self, a: str, b: str, *, both: bool = True) -> None:
        self.cut_links.add((a, b))
        if both:
            self.cut_links.add((b, a))

    def partition(self, left: list[str], right: list[str]) -> None:
        for a in left:
            for b in right:
                self.cut(a, b)

    def heal(self) -> None:
        self.cut_links.clear()


def new_net(links: Links, *, seed: int = 0, **fields: float) -> tuple[GossipNet, list[str]]:
    lines: list[str] = []
    settings: dict[str, float] = {"probe_interval_s": PROBE_S, "suspicion_s": SUSPICION_S}
    settings.update(fields)
    net = GossipNet(
        random.Random(seed),
        reachable=links.reachable,
        delay=links.delay,
        trace=lines.append,
        **settings,
    )
    return net, lines


def address(node_id: int) -> str:
    return f"sim{node_id}:{7000 + node_id}"


def config(node_id: int, peers: tuple[int, ...] = ()) -> MembershipConfig:
    return MembershipConfig(
        node_id=node_id,
        gossip_port=7000 + node_id,
        peers_to_contact=tuple(address(p) for p in peers),
        sync_timeout_s=0.05,
        anti_entropy_interval_s=0.2,
        meta_flush_interval_s=0.01,
        transport_address=f"127.0.0.1:{9000 + node_id}",
    )


def member(net: GossipNet, node_id: int, peers: tuple[int, ...] = ()) -> Membership:
    return Membership(
        config(node_id, peers),
        gossip_factory=net.gossip(f"n{node_id}", address(node_id)),
        seed=bytes([node_id]),
    )


def raw(net: GossipNet, node_id: int) -> SimGossip:
    return net.gossip(f"n{node_id}", address(node_id))(config(node_id), {"id": str(node_id)})


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.005)
    for _ in range(3):  # let the recorders read what was just emitted
        await asyncio.sleep(0)


class Recorder:
    """Collects a stream's events in a background task (gossip or membership)."""

    def __init__(self, stream: object) -> None:
        self.events: list[object] = []
        self._task = asyncio.get_running_loop().create_task(self._read(stream))

    async def _read(self, stream: object) -> None:
        async for event in stream:  # type: ignore[attr-defined]
            self.events.append(event)

    def gossip(self, name: str) -> list[GossipEventKind]:
        """The kinds of gossip events about `name`, in order."""
        return [
            e.kind
            for e in self.events
            if isinstance(e, GossipEvent) and e.member is not None and e.member.name == name
        ]

    def membership(self, node_id: int) -> list[type[MembershipEvent]]:
        """The types of membership events about node `node_id`, in order."""
        return [
            type(e)  # type: ignore[misc]
            for e in self.events
            if getattr(getattr(e, "member", None), "node_id", None) == node_id
        ]

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def started(*gossips: SimGossip) -> list[Recorder]:
    """Starts raw runs, each subscribed before it joins the first."""
    recorders = []
    for i, g in enumerate(gossips):
        await g.start()
        recorders.append(Recorder(g.events()))
        if i:
            assert await g.join([gossips[0].address]) == 1
    return recorders


def names(g: SimGossip) -> list[str]:
    return [m.name for m in g.members()]


def state_of(g: SimGossip, name: str) -> GossipState | None:
    m = g.member(name)
    return None if m is None else m.state


@pytest.mark.asyncio
async def test_three_nodes_join_and_every_view_lists_all() -> None:
    net, _ = new_net(Links())
    nodes = [member(net, 1), member(net, 2, (1,)), member(net, 3, (1, 2))]
    try:
        for m in nodes:
            await m.start()
        await until(lambda: all(m.view().node_ids == (1, 2, 3) for m in nodes), "all see all")
        epochs = {m.node_id: m.epoch for m in nodes}
        assert sorted(epochs.values()) == list(epochs.values())  # each start: a larger epoch
        for m in nodes:
            assert {i.node_id: i.epoch for i in m.view().members} == epochs
        assert net.suspicions == 0
        assert net.deaths == 0
    finally:
        for m in nodes:
            await m.close()
        await net.close()


@pytest.mark.asyncio
async def test_a_crashed_node_is_suspect_then_dead_to_the_others() -> None:
    net, lines = new_net(Links())
    nodes = [member(net, 1), member(net, 2, (1,)), member(net, 3, (1,))]
    try:
        for m in nodes:
            await m.start()
        await until(lambda: all(m.view().node_ids == (1, 2, 3) for m in nodes), "all see all")
        seen = [Recorder(nodes[0].events()), Recorder(nodes[1].events())]
        net.crash("n3")
        # Nothing is known until a probe fails: no one is told at the crash itself.
        assert net.suspicions == 0
        assert all(m.view().node_ids == (1, 2, 3) for m in nodes[:2])
        await until(lambda: all(m.view().node_ids == (1, 2) for m in nodes[:2]), "n3 gone")
        for r in seen:
            assert r.membership(3) == [MemberSuspect, MemberFailed]
            await r.stop()
        assert net.suspicions == 2
        assert net.deaths == 2
        assert net.false_suspicions == 0
        about_n3 = [line for line in lines if "sees n3@" in line and "join" not in line]
        assert about_n3 == [
            f"gossip n1 sees n3@{nodes[2].epoch} suspect",
            f"gossip n2 sees n3@{nodes[2].epoch} suspect",
            f"gossip n1 sees n3@{nodes[2].epoch} dead",
            f"gossip n2 sees n3@{nodes[2].epoch} dead",
        ]
        # A crashed run answers nothing: its stream ended, and it is silent to a probe.
        g1 = net.run("n1")
        assert g1 is not None
        assert await g1.reachability(address(3), 0.01) is Reachability.SILENT
    finally:
        for m in nodes:
            await m.close()
        await net.close()


@pytest.mark.asyncio
async def test_a_two_way_partition_kills_both_sides_and_the_heal_brings_them_back() -> None:
    links = Links()
    net, _ = new_net(links)
    nodes = [member(net, 1), member(net, 2, (1,)), member(net, 3, (1,))]
    try:
        for m in nodes:
            await m.start()
        await until(lambda: all(m.view().node_ids == (1, 2, 3) for m in nodes), "all see all")
        seen = Recorder(nodes[0].events())
        links.partition(["n1"], ["n2", "n3"])
        await until(
            lambda: (
                nodes[0].view().node_ids == (1,)
                and all(m.view().node_ids == (2, 3) for m in nodes[1:])
            ),
            "each side sees the other dead",
        )
        assert net.deaths == 4  # n1 of n2 and n3; n2 and n3 of n1
        links.heal()
        await until(lambda: all(m.view().node_ids == (1, 2, 3) for m in nodes), "healed")
        # kinship reports a dead member that answers again as joined (not recovered).
        assert seen.membership(2) == [MemberSuspect, MemberFailed, MemberJoined]
        assert seen.membership(3) == [MemberSuspect, MemberFailed, MemberJoined]
        await seen.stop()
    finally:
        for m in nodes:
            await m.close()
        await net.close()


@pytest.mark.asyncio
async def test_a_one_way_cut_fails_probes_both_ways() -> None:
    links = Links()
    net, _ = new_net(links)
    g1, g2, g3 = raw(net, 1), raw(net, 2), raw(net, 3)
    recorders = await started(g1, g2, g3)
    try:
        await until(lambda: all(names(g) == ["n1", "n2", "n3"] for g in (g1, g2, g3)), "joined")
        links.cut("n1", "n2", both=False)  # n1 -> n2 only; n2 -> n1 still flows
        await until(
            lambda: (
                state_of(g1, "n2") is GossipState.DEAD and state_of(g2, "n1") is GossipState.DEAD
            ),
            "both ends of the one-way cut see the other dead",
        )
        assert recorders[0].gossip("n2")[-2:] == [GossipEventKind.SUSPECT, GossipEventKind.DEAD]
        assert recorders[1].gossip("n1")[-2:] == [GossipEventKind.SUSPECT, GossipEventKind.DEAD]
        # The third node reaches both and sees nothing wrong.
        assert names(g3) == ["n1", "n2", "n3"]
        assert GossipEventKind.SUSPECT not in recorders[2].gossip("n1") + recorders[2].gossip("n2")
        assert names(g1) == ["n1", "n3"]
        assert names(g2) == ["n2", "n3"]
    finally:
        for r in recorders:
            await r.stop()
        await net.close()


@pytest.mark.asyncio
async def test_a_false_suspicion_is_refuted_by_the_next_good_probe() -> None:
    net, _ = new_net(Links(), false_suspicion_p=1.0, suspicion_s=60.0)
    g1, g2 = raw(net, 1), raw(net, 2)
    recorders = await started(g1, g2)
    try:
        await until(lambda: state_of(g1, "n2") is GossipState.SUSPECT, "n1 suspects n2")
        await until(lambda: state_of(g2, "n1") is GossipState.SUSPECT, "n2 suspects n1")
        assert names(g1) == ["n1", "n2"]  # a suspect is still a member
        net.false_suspicion_p = 0.0
        await until(
            lambda: (
                state_of(g1, "n2") is GossipState.ALIVE and state_of(g2, "n1") is GossipState.ALIVE
            ),
            "refuted",
        )
        expected = [GossipEventKind.JOINED, GossipEventKind.SUSPECT, GossipEventKind.RECOVERED]
        assert recorders[0].gossip("n2") == expected
        assert recorders[1].gossip("n1") == expected
        assert net.false_suspicions == net.suspicions == 2
        assert net.deaths == 0
    finally:
        for r in recorders:
            await r.stop()
        await net.close()


@pytest.mark.asyncio
async def test_false_suspicions_over_membership_recover_without_failure() -> None:
    net, _ = new_net(Links(), false_suspicion_p=1.0, suspicion_s=60.0)
    nodes = [member(net, 1), member(net, 2, (1,))]
    try:
        for m in nodes:
            await m.start()
        seen = Recorder(nodes[0].events())
        await until(lambda: MemberSuspect in seen.membership(2), "suspect")
        net.false_suspicion_p = 0.0
        await until(lambda: MemberRecovered in seen.membership(2), "recovered")
        assert MemberFailed not in seen.membership(2)
        assert nodes[0].view().node_ids == (1, 2)
        await seen.stop()
    finally:
        for m in nodes:
            await m.close()
        await net.close()


@pytest.mark.asyncio
async def test_send_reaches_a_reachable_run_only_and_refuses_unknown_runs() -> None:
    links = Links()
    net, _ = new_net(links, suspicion_s=60.0)
    g1, g2, g3 = raw(net, 1), raw(net, 2), raw(net, 3)
    recorders = await started(g1, g2, g3)
    try:
        await until(lambda: all(names(g) == ["n1", "n2", "n3"] for g in (g1, g2, g3)), "joined")
        links.cut("n1", "n3")
        await g1.send("n3", g3.epoch, b"lost")  # n3 is still a (soon suspect) member: no raise
        await g1.send("n2", g2.epoch, b"hello")
        await until(lambda: GossipEventKind.MESSAGE in recorders[1].gossip("n1"), "delivered")
        message = next(e for e in recorders[1].events if isinstance(e, GossipEvent) and e.data)
        assert message.data == b"hello"
        assert message.member is not None
        assert message.member.epoch == g1.epoch
        await asyncio.sleep(5 * PROBE_S)  # far past the delay: a lost message stays lost
        assert GossipEventKind.MESSAGE not in recorders[2].gossip("n1")
        assert net.messages == 2
        assert g1.stats().messages_sent == 2
        assert g2.stats().messages_received == 1
        with pytest.raises(PeerGoneError):
            await g1.send("n2", g2.epoch + 100, b"another run")
        with pytest.raises(PeerGoneError):
            await g1.send("n9", 1, b"nobody")
        # Reachability tells the cut peer (silent) from a reachable one (listening).
        assert await g1.reachability(g1.address, 0.01) is Reachability.SELF
        assert await g1.reachability(g2.address, 0.01) is Reachability.LISTENING
        assert await g1.reachability(g3.address, 0.01) is Reachability.SILENT
        # A message in flight to a run that crashes before it lands is dropped.
        links.heal()
        await g2.send("n3", g3.epoch, b"too late")
        net.crash("n3")
        await asyncio.sleep(5 * links.delay_s)
        assert g3.stats().messages_received == 0
    finally:
        for r in recorders:
            await r.stop()
        await net.close()


@pytest.mark.asyncio
async def test_a_leave_is_seen_as_left_and_a_restart_as_a_new_run() -> None:
    net, lines = new_net(Links())
    nodes = [member(net, 1), member(net, 2, (1,)), member(net, 3, (1,))]
    restarted: list[Membership] = []
    try:
        for m in nodes:
            await m.start()
        await until(lambda: all(m.view().node_ids == (1, 2, 3) for m in nodes), "all see all")
        seen = Recorder(nodes[0].events())
        old_epoch = nodes[2].epoch
        await nodes[2].close()  # leaves
        await until(lambda: all(m.view().node_ids == (1, 2) for m in nodes[:2]), "n3 left")
        assert seen.membership(3) == [MemberLeft]
        assert net.deaths == 0
        assert net.suspicions == 0
        # The same name again: a new run with a larger epoch, seen as a join.
        again = member(net, 3, (1,))
        restarted.append(again)
        await again.start()
        assert again.epoch > old_epoch
        await until(
            lambda: all(m.view().node_ids == (1, 2, 3) for m in (*nodes[:2], again)), "n3 back"
        )
        for m in nodes[:2]:
            assert next(i for i in m.view().members if i.node_id == 3).epoch == again.epoch
        assert seen.membership(3) == [MemberLeft, MemberJoined]
        # A crash restarted before anyone noticed: the old run leaves, the new one joins.
        crashed_epoch = nodes[1].epoch
        net.crash("n2")
        quick = member(net, 2, (1,))
        restarted.append(quick)
        await quick.start()
        await until(
            lambda: all(
                next((i.epoch for i in m.view().members if i.node_id == 2), 0) == quick.epoch
                for m in (nodes[0], again)
            ),
            "the new run of n2 replaces the old",
        )
        assert seen.membership(2)[-2:] == [MemberLeft, MemberJoined]
        assert f"gossip n1 sees n2@{crashed_epoch} left (restarted)" in lines
        await seen.stop()
    finally:
        for m in (*nodes, *restarted):
            await m.close()
        await net.close()


@pytest.mark.asyncio
async def test_metadata_reaches_a_cut_observer_at_its_next_good_probe() -> None:
    links = Links()
    net, _ = new_net(links, suspicion_s=60.0)
    g1, g2 = raw(net, 1), raw(net, 2)
    recorders = await started(g1, g2)
    try:
        await until(lambda: names(g1) == ["n1", "n2"] and names(g2) == ["n1", "n2"], "joined")
        links.cut("n2", "n1")
        await g2.set_meta({"id": "2", "v": "new"})
        await until(lambda: state_of(g1, "n2") is GossipState.SUSPECT, "n1 suspects n2")
        m = g1.member("n2")
        assert m is not None
        assert "v" not in m.meta
        links.heal()
        await until(lambda: (g1.member("n2") or m).meta.get("v") == "new", "meta after heal")
        # Suspected across the cut, the good probe both refutes and brings the new meta.
        assert recorders[0].gossip("n2") == [
            GossipEventKind.JOINED,
            GossipEventKind.SUSPECT,
            GossipEventKind.RECOVERED,
        ]
        recovered = recorders[0].events[-1]
        assert isinstance(recovered, GossipEvent)
        assert recovered.member is not None
        assert recovered.member.meta["v"] == "new"
        # Reachable, a change travels as a notice: UPDATED, with nothing suspected.
        await g2.set_meta({"id": "2", "v": "newer"})
        await until(lambda: len(recorders[0].gossip("n2")) == 4, "updated")
        assert recorders[0].gossip("n2")[-1] is GossipEventKind.UPDATED
        assert (g1.member("n2") or m).meta["v"] == "newer"
    finally:
        for r in recorders:
            await r.stop()
        await net.close()


def replay(seed: int) -> list[str]:
    """One scripted run on virtual time: joins, a partition and heal, a crash and restart,
    with random delays and false suspicions from `seed`; the trace, timestamped."""
    loop = VirtualLoop()
    rng = random.Random(seed)
    lines: list[str] = []
    views: list[tuple[int, ...]] = []
    links = Links()

    def delay(a: str, b: str) -> float:
        return rng.uniform(0.001, 0.02)

    def trace(line: str) -> None:
        lines.append(f"{loop.time():9.4f} {line}")

    async def main() -> None:
        net = GossipNet(
            random.Random(rng.getrandbits(64)),
            reachable=links.reachable,
            delay=delay,
            probe_interval_s=0.5,
            suspicion_s=2.0,
            false_suspicion_p=0.2,
            trace=trace,
        )
        nodes = [member(net, i, (1,) if i > 1 else ()) for i in range(1, 5)]
        for m in nodes:
            await m.start()
            await asyncio.sleep(0.3)
        await asyncio.sleep(3.0)
        links.partition(["n1", "n2"], ["n3", "n4"])
        await asyncio.sleep(5.0)
        links.heal()
        await asyncio.sleep(3.0)
        net.crash("n4")
        await asyncio.sleep(1.0)
        again = member(net, 4, (2,))
        await again.start()
        await asyncio.sleep(3.0)
        await nodes[2].close()
        await asyncio.sleep(2.0)
        views.extend(m.view().node_ids for m in (*nodes[:2], again))
        for m in (*nodes, again):
            await m.close()
        await net.close()

    try:
        loop.run_until_complete(main())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    assert not loop.errors, loop.errors
    assert views == [(1, 2, 4)] * 3, views
    return lines


def test_the_same_seed_gives_the_same_trace() -> None:
    first, second = replay(11), replay(11)
    assert first == second
    text = "\n".join(first)
    for what in ("suspect (false)", "recover", "dead", "rejoin", "left (restarted)", " left"):
        assert what in text, what
    assert replay(12) != first  # the seed does matter
