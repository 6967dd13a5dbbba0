"""The thread facade (`copycat.sync`) driven over an in-memory async node: commits flow in
order through bounded channels, backpressure holds, errors cross threads with their
type, timeouts raise TimeoutError, interrupts and shutdown never leave a thread behind,
and the Go README's goroutine-and-channel hashmap translates line for line.

Every wait here has a safety bound only; no test asserts how fast anything is."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from typing import TYPE_CHECKING

import pytest

import copycat.sync
from copycat import LOAD_SNAPSHOT
from copycat._config import Config
from copycat._ids import DataStructureId
from copycat.errors import (
    BrokenError,
    ClosedError,
    CopyCatError,
    InvalidIdError,
    NotEnoughNodesError,
    NotLeaderError,
    ProposalDroppedError,
)
from copycat.sync import Channel, CopyCat, Subscription, _facade, select
from tests.sync.fakes import FakeFactory, FakeSubscription

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

SAFETY_S = 10.0
"""Upper bound of every wait: reaching it means the facade hung, not that it was slow."""


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SAFETY_S
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.002)


def facade_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("copycat-sync-")]


@pytest.fixture(autouse=True)
def _no_thread_left_behind() -> Iterator[None]:
    before = set(facade_threads())
    yield
    wait_until(lambda: set(facade_threads()) <= before, "facade threads to end")


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def cc(factory: FakeFactory) -> Iterator[CopyCat]:
    with CopyCat(Config(), node_factory=factory) as node:
        yield node
    assert not node.loop_thread.is_alive()


def fake(sub: Subscription) -> FakeSubscription:
    inner = sub._inner
    assert isinstance(inner, FakeSubscription)
    return inner


def no_snapshot() -> bytes:
    return b""


def on_loop(cc: CopyCat, coro: Coroutine[object, object, None]) -> None:
    """Run a coroutine of the fake on the facade's loop (as the node would)."""
    asyncio.run_coroutine_threadsafe(coro, cc._loop.loop).result(SAFETY_S)


# -- lifecycle ------------------------------------------------------------------------------


def test_context_manager_starts_and_shuts_down_the_node(factory: FakeFactory) -> None:
    with CopyCat(Config(), node_factory=factory) as cc:
        assert cc.running
        assert factory.node.started
        assert cc.loop_thread.is_alive()
        assert cc.loop_thread.daemon
        assert factory.node.config == Config()
    assert factory.node.shut_down
    assert not cc.running
    assert not cc.loop_thread.is_alive()


def test_calls_before_start_and_after_shutdown_are_refused(factory: FakeFactory) -> None:
    cc = CopyCat(Config(), node_factory=factory)
    with pytest.raises(CopyCatError, match="start the node first"):
        cc.allocate_data_structure()
    cc.start(timeout=SAFETY_S)
    with pytest.raises(CopyCatError, match="once"):
        cc.start()
    cc.shutdown(timeout=SAFETY_S)
    cc.shutdown(timeout=SAFETY_S)  # idempotent
    with pytest.raises(ClosedError):
        cc.new_data_structure_id()
    with pytest.raises(ClosedError):
        cc.subscribe(DataStructureId.new(), no_snapshot)


def test_shutdown_without_start_releases_the_loop(factory: FakeFactory) -> None:
    cc = CopyCat(Config(), node_factory=factory)
    cc.shutdown()
    assert factory.nodes == []
    with pytest.raises(ClosedError):
        cc.new_data_structure_id()


def test_a_failing_start_raises_its_error_and_stops_the_thread(factory: FakeFactory) -> None:
    factory.behaviour.start_error = BrokenError("disk gone")
    cc = CopyCat(Config(), node_factory=factory)
    with pytest.raises(BrokenError, match="disk gone"):
        cc.start(timeout=SAFETY_S)
    assert not cc.loop_thread.is_alive()
    assert factory.node.shut_down  # what started was stopped again


def test_without_a_node_class_start_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_facade, "_NODE_CLASS", "NoSuchNodeClass")
    cc = CopyCat(Config())
    with pytest.raises(CopyCatError, match="node_factory"):
        cc.start(timeout=SAFETY_S)
    assert not cc.loop_thread.is_alive()


# -- operations and errors ------------------------------------------------------------------


def test_ids_and_allocation(cc: CopyCat, factory: FakeFactory) -> None:
    assert isinstance(cc.new_data_structure_id(), DataStructureId)
    assert isinstance(cc.allocate_data_structure(), DataStructureId)
    assert isinstance(cc.allocate_data_structure(replicas=3, timeout=SAFETY_S), DataStructureId)


def test_errors_from_the_loop_thread_keep_their_type(cc: CopyCat, factory: FakeFactory) -> None:
    with pytest.raises(NotEnoughNodesError) as info:
        cc.allocate_data_structure(replicas=5)
    assert (info.value.asked, info.value.available) == (5, 3)
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    factory.behaviour.propose_error = NotLeaderError(7)
    with pytest.raises(NotLeaderError) as leader:
        sub.propose(b"x")
    assert leader.value.leader_hint == 7
    factory.behaviour.propose_error = None
    sub.propose(b"y")
    assert sub.commits.get(timeout=SAFETY_S) == b"y"


def test_subscribe_accepts_the_string_form_and_refuses_bad_text(
    cc: CopyCat, factory: FakeFactory
) -> None:
    ds_id = DataStructureId.new()
    sub = cc.subscribe(str(ds_id), no_snapshot)
    assert sub.data_structure_id == ds_id
    assert fake(sub).data_structure_id == ds_id
    with pytest.raises(InvalidIdError):
        cc.subscribe("not-an-id", no_snapshot)
    assert len(factory.node.subscriptions) == 1


def test_a_failed_stream_reaches_the_reader_after_the_buffered_items(cc: CopyCat) -> None:
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    sub.propose(b"1")
    sub.propose(b"2")
    on_loop(cc, fake(sub).fail_commits(BrokenError("the group stopped")))
    received: list[object] = []
    with pytest.raises(BrokenError, match="the group stopped"):
        received.extend(sub.commits)
    assert received == [b"1", b"2"]
    with pytest.raises(BrokenError):
        sub.commits.get(timeout=0)  # the end stays
    assert sub.commits.closed


def test_the_errors_channel_delivers_errors(cc: CopyCat) -> None:
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    dropped = ProposalDroppedError("flow control")
    on_loop(cc, fake(sub).error_queue.put(dropped))
    assert sub.errors.get(timeout=SAFETY_S) is dropped


# -- commits, ordering, backpressure --------------------------------------------------------


def test_commits_flow_in_order_through_the_channel(cc: CopyCat) -> None:
    sub = cc.subscribe(DataStructureId.new(), no_snapshot, capacity=16)
    sent = [f"op {i}".encode() for i in range(300)]
    received: list[bytes | object] = []

    def read() -> None:
        for item in sub.commits:
            received.append(item)
            if len(received) == len(sent):
                return

    reader = threading.Thread(target=read)
    reader.start()
    for data in sent:
        sub.propose(data, timeout=SAFETY_S)
    reader.join(SAFETY_S)
    assert not reader.is_alive()
    assert received == sent


def test_proposals_from_many_threads_each_arrive_once_in_per_thread_order(cc: CopyCat) -> None:
    sub = cc.subscribe(DataStructureId.new(), no_snapshot, capacity=8)

    def propose(t: int) -> None:
        for i in range(50):
            sub.propose(f"{t}:{i}".encode(), timeout=SAFETY_S)

    threads = [threading.Thread(target=propose, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    received = [sub.commits.get(timeout=SAFETY_S) for _ in range(200)]
    for t in threads:
        t.join(SAFETY_S)
    assert len(set(received)) == 200
    for n in range(4):
        mine = [
            item
            for item in received
            if isinstance(item, bytes) and item.startswith(f"{n}:".encode())
        ]
        assert mine == [f"{n}:{i}".encode() for i in range(50)]


def test_backpressure_bounds_the_channel(cc: CopyCat, factory: FakeFactory) -> None:
    factory.behaviour.endless = True
    sub = cc.subscribe(DataStructureId.new(), no_snapshot, capacity=8)
    inner = fake(sub)
    wait_until(lambda: len(sub.commits) == 8, "the channel to fill")
    # The pump holds at most one item beyond the capacity while it waits for room.
    for _ in range(20):
        assert inner.pulled <= 8 + 1
        assert len(sub.commits) == 8
        time.sleep(0.001)
    taken = [sub.commits.get(timeout=SAFETY_S) for _ in range(5)]
    assert taken == [b"1", b"2", b"3", b"4", b"5"]
    wait_until(lambda: len(sub.commits) == 8, "the channel to fill again")
    assert inner.pulled <= 8 + 1 + 5
    assert sub.commits.get(timeout=SAFETY_S) == b"6"


def test_closing_a_channel_stops_the_pump_and_wakes_readers(
    cc: CopyCat, factory: FakeFactory
) -> None:
    factory.behaviour.endless = True
    sub = cc.subscribe(DataStructureId.new(), no_snapshot, capacity=4)
    wait_until(lambda: len(sub.commits) == 4, "the channel to fill")
    outcome: list[BaseException] = []

    def blocked_reader() -> None:
        try:
            sub.errors.get()
        except ClosedError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=blocked_reader)
    reader.start()
    sub.commits.close()
    sub.errors.close()
    reader.join(SAFETY_S)
    assert len(outcome) == 1
    assert len(sub.commits) == 0
    with pytest.raises(ClosedError):
        sub.commits.get(timeout=0)
    assert list(sub.commits) == []
    wait_until(lambda: all(p.done() for p in sub._pumps), "the pumps to stop")


def test_closing_the_subscription_ends_the_reader_thread(cc: CopyCat) -> None:
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    received: list[object] = []
    reader = threading.Thread(target=lambda: received.extend(sub.commits))
    reader.start()
    sub.propose(b"a")
    wait_until(lambda: received == [b"a"], "the first commit")
    sub.close(timeout=SAFETY_S)
    reader.join(SAFETY_S)
    assert not reader.is_alive()
    assert fake(sub).closed
    assert sub.closed
    with pytest.raises(ClosedError):
        sub.propose(b"b")
    sub.close()  # idempotent


def test_shutdown_ends_every_subscription_and_joins_the_thread(factory: FakeFactory) -> None:
    cc = CopyCat(Config(), node_factory=factory)
    cc.start(timeout=SAFETY_S)
    subs = [cc.subscribe(DataStructureId.new(), no_snapshot) for _ in range(3)]
    readers = [threading.Thread(target=lambda s=s: list(s.commits)) for s in subs]
    for r in readers:
        r.start()
    cc.shutdown(timeout=SAFETY_S)
    for r in readers:
        r.join(SAFETY_S)
        assert not r.is_alive()
    assert not cc.loop_thread.is_alive()
    assert all(s.closed for s in subs)
    subs[0].close()  # a no-op once the facade is down


def test_leave_hands_over_then_shuts_down_and_joins_the_thread(factory: FakeFactory) -> None:
    cc = CopyCat(Config(), node_factory=factory)
    cc.start(timeout=SAFETY_S)
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    cc.leave(timeout=7.5)
    assert factory.nodes[0].left_with == 7.5
    assert factory.nodes[0].shut_down
    assert not cc.loop_thread.is_alive()
    assert sub.closed
    with pytest.raises(ClosedError):
        cc.allocate_data_structure()


# -- snapshots ------------------------------------------------------------------------------


def test_load_snapshot_marker_carries_its_bytes(factory: FakeFactory, cc: CopyCat) -> None:
    factory.behaviour.start_snapshot = b'{"k": "v"}'
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    assert sub.commits.get(timeout=SAFETY_S) is LOAD_SNAPSHOT
    assert sub.load_snapshot(timeout=SAFETY_S) == b'{"k": "v"}'
    # Without a pending LOAD_SNAPSHOT the node answers (here: with its error).
    with pytest.raises(ClosedError, match="no snapshot is pending"):
        sub.load_snapshot(timeout=SAFETY_S)


def test_snapshot_provider_runs_in_the_reader_thread_at_the_reader_position(
    factory: FakeFactory, cc: CopyCat
) -> None:
    factory.behaviour.snapshot_every = 10
    applied = 0
    provider_threads: set[threading.Thread] = set()

    def provider() -> bytes:
        provider_threads.add(threading.current_thread())
        return str(applied).encode()

    sub = cc.subscribe(DataStructureId.new(), provider, capacity=64)
    for i in range(95):
        sub.propose(str(i).encode(), timeout=SAFETY_S)
    # Everything is committed before anyone reads: the pump reads ahead as far as the
    # capacity allows, yet every snapshot must describe what the reader applied.

    def read() -> None:
        nonlocal applied
        for _ in sub.commits:
            applied += 1
            if applied == 95:
                return

    reader = threading.Thread(target=read, name="reader")
    reader.start()
    reader.join(SAFETY_S)
    assert applied == 95
    snapshots = fake(sub).snapshots
    assert [position for position, _ in snapshots] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    for position, data in snapshots:
        assert data == str(position).encode()
    assert provider_threads == {reader}


def test_a_failing_snapshot_provider_fails_the_stream_with_its_error(
    factory: FakeFactory, cc: CopyCat
) -> None:
    factory.behaviour.snapshot_every = 2

    def provider() -> bytes:
        raise ValueError("cannot serialize")

    sub = cc.subscribe(DataStructureId.new(), provider)
    for i in range(3):
        sub.propose(str(i).encode())
    with pytest.raises(ValueError, match="cannot serialize"):
        list(sub.commits)


# -- timeouts and interrupts ----------------------------------------------------------------


def test_timeouts_raise_timeout_error_and_cancel_the_operation(
    factory: FakeFactory, cc: CopyCat
) -> None:
    factory.behaviour.propose_hangs = True
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    with pytest.raises(TimeoutError, match="propose"):
        sub.propose(b"x", timeout=0.05)
    wait_until(lambda: fake(sub).cancelled_proposals == 1, "the proposal to be cancelled")
    with pytest.raises(TimeoutError):
        sub.commits.get(timeout=0.01)
    with pytest.raises(TimeoutError):
        select(sub.commits, sub.errors, timeout=0.01)
    with pytest.raises(ValueError, match="negative"):
        sub.propose(b"x", timeout=-1)


def test_a_start_that_hangs_times_out_and_leaves_no_thread(factory: FakeFactory) -> None:
    factory.behaviour.start_hangs = True
    cc = CopyCat(Config(), node_factory=factory)
    with pytest.raises(TimeoutError, match="start"):
        cc.start(timeout=0.05)
    assert not cc.loop_thread.is_alive()


def test_shutdown_is_bounded_when_the_node_hangs(factory: FakeFactory) -> None:
    cc = CopyCat(Config(), node_factory=factory)
    cc.start(timeout=SAFETY_S)
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    factory.behaviour.shutdown_hangs = True
    with pytest.raises(TimeoutError, match="shutdown"):
        cc.shutdown(timeout=0.1)
    assert not cc.loop_thread.is_alive()
    with pytest.raises(ClosedError):
        sub.commits.get(timeout=SAFETY_S)  # the cancelled pump ended the channel


def test_keyboard_interrupt_cancels_the_call_without_hanging_the_loop(factory: FakeFactory) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        factory.behaviour.propose_hangs = True
        cc = CopyCat(Config(), node_factory=factory)
        cc.start(timeout=SAFETY_S)
        sub = cc.subscribe(DataStructureId.new(), no_snapshot)
        main = threading.main_thread().ident
        assert main is not None
        timer = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                sub.propose(b"x")  # blocks until the interrupt
        finally:
            timer.join()
        wait_until(lambda: fake(sub).cancelled_proposals == 1, "the proposal to be cancelled")
        assert cc.running  # the loop thread carries on
        assert isinstance(cc.new_data_structure_id(), DataStructureId)
        cc.shutdown(timeout=SAFETY_S)
        assert not cc.loop_thread.is_alive()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_blocking_calls_from_the_loop_thread_are_refused(cc: CopyCat) -> None:
    async def from_the_loop() -> None:
        cc.new_data_structure_id()

    future = asyncio.run_coroutine_threadsafe(from_the_loop(), cc._loop.loop)
    with pytest.raises(CopyCatError, match="deadlock"):
        future.result(SAFETY_S)


# -- channels on their own ------------------------------------------------------------------


def test_channel_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Channel(0)
    assert Channel(3).capacity == 3
    assert "open 0/3" in repr(Channel(3, name="x"))


def test_select_needs_a_channel() -> None:
    with pytest.raises(ValueError, match="at least one"):
        select()


def test_select_takes_from_whichever_channel_has_an_item(cc: CopyCat) -> None:
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    on_loop(cc, fake(sub).error_queue.put(ProposalDroppedError("later")))
    sub.propose(b"c")
    seen: dict[str, object] = {}
    for _ in range(2):
        channel, item = select(sub.commits, sub.errors, timeout=SAFETY_S)
        seen["commits" if channel is sub.commits else "errors"] = item
    assert seen["commits"] == b"c"
    assert isinstance(seen["errors"], ProposalDroppedError)


# -- the Go README's hashmap, line for line -------------------------------------------------


class TheMap:
    """The original README's `theMap`: a mutex-guarded map, a propose channel (here a
    blocking `propose`), and a goroutine (here a thread) serving the commit and error
    channels with `select`."""

    def __init__(self, cc: CopyCat, ds_id: str) -> None:
        self.data: dict[str, str] = {}
        self.lock = threading.Lock()
        self.errors: list[CopyCatError] = []
        self.sub = cc.subscribe(ds_id, self.snapshot_provider)
        self.serving = threading.Thread(target=self.serve_channels, name="serve-channels")
        self.serving.start()

    def get(self, key: str) -> str:
        with self.lock:
            return self.data.get(key, "")

    def put(self, key: str, value: str) -> None:
        self.sub.propose(json.dumps([key, value]).encode())

    def serve_channels(self) -> None:
        while True:
            try:
                channel, item = copycat.sync.select(self.sub.commits, self.sub.errors)
            except ClosedError:
                return
            if channel is self.sub.errors:
                assert isinstance(item, CopyCatError)
                self.errors.append(item)
            elif item is LOAD_SNAPSHOT:
                state = json.loads(self.sub.load_snapshot())
                with self.lock:
                    self.data = state
            else:
                assert isinstance(item, bytes)
                key, value = json.loads(item)
                with self.lock:
                    if value == "":
                        self.data.pop(key, None)
                    else:
                        self.data[key] = value

    def snapshot_provider(self) -> bytes:
        with self.lock:
            return json.dumps(self.data).encode()


def test_the_go_readme_hashmap_translates_line_for_line(factory: FakeFactory) -> None:
    factory.behaviour.start_snapshot = json.dumps({"from": "snapshot"}).encode()
    factory.behaviour.snapshot_every = 3
    with copycat.sync.CopyCat(Config(), node_factory=factory) as cc:
        the_map = TheMap(cc, "01CFR5R4JJE9KNRAJFFEAQ2SAJ")
        the_map.put("hello", "world")
        the_map.put("k", "v")
        the_map.put("k", "")  # empty value means delete
        the_map.put("last", "one")
        wait_until(lambda: the_map.get("last") == "one", "the last put to be applied")
        assert the_map.get("hello") == "world"
        assert the_map.get("k") == ""
        assert the_map.get("from") == "snapshot"
        on_loop(cc, fake(the_map.sub).error_queue.put(ProposalDroppedError("retry")))
        wait_until(lambda: len(the_map.errors) == 1, "the error to be served")
        snapshots = fake(the_map.sub).snapshots
        assert snapshots
        assert json.loads(snapshots[0][1]) == {"from": "snapshot", "hello": "world"}
    the_map.serving.join(SAFETY_S)
    assert not the_map.serving.is_alive()


# -- the package's public names -------------------------------------------------------------


def test_sync_exports_resolve_to_documented_objects() -> None:
    for name in copycat.sync.__all__:
        obj = getattr(copycat.sync, name)
        if name.isupper():
            assert isinstance(obj, int | float)
            continue
        assert obj.__module__.startswith("copycat.sync."), name
        assert obj.__doc__, f"copycat.sync.{name} has no docstring"
    public = {n for n in vars(copycat.sync) if not n.startswith("_") and n != "annotations"}
    assert public == set(copycat.sync.__all__)
