"""`copycat.sync` has the same queries and error types as the asyncio API (issue 14).

* Every public name of `copycat.CopyCat` is listed below as a query (which the facade
  must offer under the same name, of the same kind, with the same return type), an
  action, or a name the facade leaves out on purpose: a new asyncio query without a
  sync twin fails here.
* On a real threaded node on ports 0 (in a subprocess, as test_sync_real_node.py does:
  kinship may crash at interpreter teardown), the facade's queries equal what its own
  asyncio node answers, and each misuse raises the asyncio node's error type.
* Over the fake node: the same misuse table, the situations only the facade has (a
  start still under way, a blocking call on the loop thread), and queries that answer
  on the loop thread and never wait without bound.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import pytest

import copycat
import copycat.sync
from copycat._config import Config
from copycat._ids import DataStructureId
from copycat.errors import ArgumentError, ClosedError, CopyCatError
from copycat.sync import _facade
from tests.sync._subprocess import run_life
from tests.sync.fakes import FakeFactory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)

SAFETY_S = 10.0
"""Upper bound of every wait: reaching it means the facade hung, not that it was slow."""

QUERIES: Final = (
    "address",
    "config",
    "counters",
    "gossip_address",
    "groups",
    "http_address",
    "members",
    "metric_counters",
    "metrics",
    "name",
    "new_data_structure_id",
    "node_id",
    "readiness",
    "status",
)
"""Queries of `copycat.CopyCat` that `copycat.sync.CopyCat` answers under the same name."""

ACTIONS: Final = (
    "allocate_data_structure",
    "leave",
    "recover",
    "shutdown",
    "start",
    "subscribe",
)
"""Operations of `copycat.CopyCat` that `copycat.sync.CopyCat` offers as blocking calls."""

LEFT_OUT: Final = {
    "world": "the simulator's plug point: copycat.testing.sim drives asyncio nodes only",
}
"""Public names of `copycat.CopyCat` the facade leaves out, and why."""

SUBSCRIPTION_NAMES: Final = (
    "close",
    "commits",
    "data_structure_id",
    "errors",
    "load_snapshot",
    "position",
    "propose",
    "read_barrier",
    "wait_delivered",
)
"""Public names of `copycat.Subscription` (`data_structure_id` is set per instance);
`commits` and `errors` are channels in the facade, the rest keep their names."""


def no_snapshot() -> bytes:
    return b""


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SAFETY_S
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.002)


def facade_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("copycat-sync-")}


@pytest.fixture(autouse=True)
def _no_thread_left_behind() -> Iterator[None]:
    before = facade_threads()
    yield
    wait_until(lambda: facade_threads() <= before, "facade threads to end")


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def cc(factory: FakeFactory) -> Iterator[copycat.sync.CopyCat]:
    with copycat.sync.CopyCat(Config(), node_factory=factory) as node:
        yield node


def _public(names: Any) -> set[str]:
    return {name for name in names if not name.startswith("_")}


def _return_annotation(attr: object) -> object:
    function = attr.fget if isinstance(attr, property) else attr
    assert callable(function)
    return inspect.signature(function).return_annotation


# -- (a) every asyncio query has a sync twin ------------------------------------------------


def test_every_public_name_of_the_asyncio_node_is_classified() -> None:
    asyncio_node = copycat.CopyCat(Config())  # constructing opens nothing
    public = _public(dir(copycat.CopyCat)) | _public(vars(asyncio_node))
    classified = set(QUERIES) | set(ACTIONS) | set(LEFT_OUT)
    assert public - classified == set(), (
        "new public names on copycat.CopyCat: add each to QUERIES (and give "
        "copycat.sync.CopyCat a twin), ACTIONS, or LEFT_OUT with the reason"
    )
    assert classified - public == set(), "listed here but gone from copycat.CopyCat"


@pytest.mark.parametrize("name", QUERIES + ACTIONS)
def test_the_sync_facade_has_each_query_and_action(name: str) -> None:
    assert hasattr(copycat.sync.CopyCat, name), f"copycat.sync.CopyCat has no {name}"


@pytest.mark.parametrize("name", QUERIES)
def test_each_query_is_of_the_same_kind_with_the_same_return_type(name: str) -> None:
    mine = inspect.getattr_static(copycat.sync.CopyCat, name)
    theirs = inspect.getattr_static(copycat.CopyCat, name, None)
    if theirs is None:
        # An attribute set per instance (`config`, `node_id`): a read-only property here.
        assert isinstance(mine, property), f"copycat.sync.CopyCat.{name} is not a property"
        assert mine.fset is None
        return
    assert isinstance(mine, property) == isinstance(theirs, property), name
    assert _return_annotation(mine) == _return_annotation(theirs), name


def test_node_id_is_an_int_before_start_like_the_asyncio_node(factory: FakeFactory) -> None:
    assert copycat.CopyCat(Config()).node_id == 0
    assert copycat.sync.CopyCat(Config(), node_factory=factory).node_id == 0


def test_the_sync_subscription_has_each_name_of_the_asyncio_subscription() -> None:
    public = _public(dir(copycat.Subscription)) | {"data_structure_id"}
    assert public == set(SUBSCRIPTION_NAMES), "update SUBSCRIPTION_NAMES and the facade"
    for name in SUBSCRIPTION_NAMES:
        assert hasattr(copycat.sync.Subscription, name), name


# -- (b) and (c) on a real threaded node ------------------------------------------------------

MISUSE: Final = {
    # situation: (the asyncio node's error type, a substring both messages share)
    "before start: address": ("copycat.errors.CopyCatError", "start the node first"),
    "before start: gossip_address": ("copycat.errors.CopyCatError", "start the node first"),
    "before start: members()": ("copycat.errors.CopyCatError", "start the node first"),
    "before start: groups()": ("copycat.errors.CopyCatError", "start the node first"),
    "before start: counters()": ("copycat.errors.CopyCatError", "start the node first"),
    "before start: metrics()": ("copycat.errors.CopyCatError", "start the node first"),
    "before start: status()": ("copycat.errors.CopyCatError", "start the node first"),
    "before start: metric_counters()": ("copycat.errors.CopyCatError", "start the node first"),
    "start twice": ("copycat.errors.CopyCatError", "already started"),
    "subscribe with a provider that is not callable": (
        "copycat.errors.ArgumentError",
        "snapshot_provider must be a callable",
    ),
    "propose on a closed subscription": ("copycat.errors.ClosedError", "closed"),
    "after shutdown: address": ("copycat.errors.ClosedError", "node is shut down"),
    "after shutdown: gossip_address": ("copycat.errors.ClosedError", "node is shut down"),
    "after shutdown: members()": ("copycat.errors.ClosedError", "node is shut down"),
    "after shutdown: groups()": ("copycat.errors.ClosedError", "node is shut down"),
    "after shutdown: counters()": ("copycat.errors.ClosedError", "node is shut down"),
    "after shutdown: metrics()": ("copycat.errors.ClosedError", "node is shut down"),
    "after shutdown: status()": ("copycat.errors.ClosedError", "node is shut down"),
    "after shutdown: metric_counters()": ("copycat.errors.ClosedError", "node is shut down"),
    "start after shutdown": ("copycat.errors.ClosedError", "cannot start again"),
}


def _port(address: str) -> int:
    host, _, port = address.rpartition(":")
    assert host, address
    return int(port)


@pytest.fixture(scope="module")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What tests/sync/parity_node.py saw on a real node (it shuts the node down and
    leaves its process before this returns)."""
    data_dir: Path = tmp_path_factory.mktemp("parity") / "node"
    result: dict[str, Any] = run_life("tests.sync.parity_node", str(data_dir), tag="parity")
    return result


def test_a_real_node_on_port_0_reports_its_bound_addresses(real_node: dict[str, Any]) -> None:
    mine, theirs = real_node["sync"], real_node["asyncio"]
    assert _port(mine["gossip_address"]) != 0
    assert _port(mine["address"]) != 0
    assert mine["gossip_address"] == theirs["gossip_address"]
    assert mine["address"] == theirs["address"]
    assert mine["node_id"] == theirs["node_id"] == 1
    assert real_node["node_id_before"] == {"sync": 0, "asyncio": 0}
    assert real_node["node_id_after"] == {"sync": 1, "asyncio": 1}


MOVING: Final = ("commit", "applied")
"""Fields of a group that may move between two reads."""


def _steady(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in g.items() if k not in MOVING} for g in groups]


def test_a_real_node_lists_itself_its_group_and_its_counters(real_node: dict[str, Any]) -> None:
    mine, theirs = real_node["sync"], real_node["asyncio"]
    me = [m for m in mine["members"] if m["node_id"] == mine["node_id"]]
    assert len(me) == 1, mine["members"]
    assert me[0]["gossip_address"] == mine["gossip_address"]
    assert me[0]["transport_address"] == mine["address"]
    assert mine["members"] == theirs["members"]
    subscribed = [g for g in mine["groups"] if g["data_structure_id"] == real_node["ds_id"]]
    assert len(subscribed) == 1, mine["groups"]
    assert subscribed[0]["member"] == "subscriber"
    assert _steady(mine["groups"]) == _steady(theirs["groups"])
    assert mine["counter_types"] == ["int"]
    assert "cycles" in mine["counter_names"]
    assert mine["counter_names"] == theirs["counter_names"]


def test_a_real_node_reports_the_same_status_metrics_and_readiness(
    real_node: dict[str, Any],
) -> None:
    mine, theirs = real_node["sync"], real_node["asyncio"]
    for name in ("http_address", "status_node", "status_members", "readiness"):
        assert mine[name] == theirs[name], name
    assert mine["http_address"] is None  # no http_port in the config
    assert mine["status_node"]["gossip_address"] == mine["gossip_address"]
    assert mine["status_group_ids"] == theirs["status_group_ids"] == [real_node["ds_id"]]
    assert mine["metrics_name_copycat"]
    assert theirs["metrics_name_copycat"]
    assert mine["metric_counter_layers"] == theirs["metric_counter_layers"]
    assert "host" in mine["metric_counter_layers"]
    assert mine["readiness"] == []  # the subscribed group has a leader


@pytest.mark.parametrize("when", ["before start", "after shutdown"])
def test_a_node_that_is_not_running_answers_as_the_asyncio_node_does(
    real_node: dict[str, Any], when: str
) -> None:
    seen = real_node["not_running"][when]
    assert seen["http_address"] == {"sync": None, "asyncio": None}
    assert seen["readiness"]["sync"] == seen["readiness"]["asyncio"]
    assert seen["readiness"]["sync"] == ["the node is not running"]


@pytest.mark.parametrize("situation", sorted(MISUSE))
def test_each_misuse_of_a_real_node_raises_the_asyncio_error_type(
    real_node: dict[str, Any], situation: str
) -> None:
    expected_type, shared = MISUSE[situation]
    seen = real_node["misuse"][situation]
    assert seen["asyncio"][0] == expected_type, seen
    assert seen["sync"][0] == expected_type, seen
    assert shared in seen["asyncio"][1], seen
    assert shared in seen["sync"][1], seen


def test_every_misuse_of_the_real_node_is_checked(real_node: dict[str, Any]) -> None:
    assert set(real_node["misuse"]) == set(MISUSE)


# -- queries over the fake node ---------------------------------------------------------------


def test_queries_are_answered_by_the_node_on_its_loop_thread(
    cc: copycat.sync.CopyCat, factory: FakeFactory
) -> None:
    node = factory.node
    assert cc.node_id == node.node_id == 7
    assert cc.address == "127.0.0.1:7001"
    assert cc.gossip_address == "127.0.0.1:7002"
    assert [m.node_id for m in cc.members()] == [7]
    assert cc.groups() == ()
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    assert [g.data_structure_id for g in cc.groups(timeout=SAFETY_S)] == [
        str(sub.data_structure_id)
    ]
    first, second = cc.counters(), cc.counters(timeout=None)
    assert first == {"cycles": 1, "quiescent_groups": 0}
    assert second["cycles"] == 2
    assert node.query_threads == {cc.loop_thread.ident}


def test_the_observability_queries_are_answered_by_the_node(
    cc: copycat.sync.CopyCat, factory: FakeFactory
) -> None:
    assert cc.http_address == "127.0.0.1:7003"
    assert cc.metrics() == b"copycat_fake_cycles_total 1\n"
    assert cc.status(timeout=SAFETY_S)["node"] == {"node_id": 7}
    assert cc.readiness() == []
    assert cc.metric_counters() == {"host": {"cycles": 0}}
    assert factory.node.query_threads == {cc.loop_thread.ident}


def test_http_address_and_readiness_answer_while_not_running(factory: FakeFactory) -> None:
    theirs = copycat.CopyCat(Config())
    cc = copycat.sync.CopyCat(Config(), node_factory=factory)
    assert cc.http_address is theirs.http_address is None
    assert cc.readiness() == theirs.readiness() == ["the node is not running"]
    cc.start(timeout=SAFETY_S)
    cc.shutdown(timeout=SAFETY_S)
    assert cc.http_address is None
    assert cc.readiness() == ["the node is not running"]


def test_node_id_is_kept_after_shutdown(factory: FakeFactory) -> None:
    cc = copycat.sync.CopyCat(Config(), node_factory=factory)
    cc.start(timeout=SAFETY_S)
    cc.shutdown(timeout=SAFETY_S)
    assert cc.node_id == 7


def _block_the_loop(cc: copycat.sync.CopyCat) -> threading.Event:
    """Keep the loop thread busy until the returned event is set."""
    release = threading.Event()
    cc._loop.loop.call_soon_threadsafe(release.wait, SAFETY_S)
    return release


def test_a_query_on_a_busy_loop_times_out(cc: copycat.sync.CopyCat) -> None:
    release = _block_the_loop(cc)
    try:
        with pytest.raises(TimeoutError, match=r"members\(\)"):
            cc.members(timeout=0.05)
    finally:
        release.set()
    assert [m.node_id for m in cc.members()] == [7]


def test_a_property_query_waits_at_most_the_default_query_timeout(
    cc: copycat.sync.CopyCat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_facade, "DEFAULT_QUERY_TIMEOUT_S", 0.05)
    release = _block_the_loop(cc)
    try:
        with pytest.raises(TimeoutError, match="gossip_address"):
            _ = cc.gossip_address
    finally:
        release.set()
    assert cc.gossip_address == "127.0.0.1:7002"


# -- (c) misuse over the fake node ------------------------------------------------------------

QUERY_CALLS: Final[dict[str, Callable[[Any], object]]] = {
    "address": lambda node: node.address,
    "gossip_address": lambda node: node.gossip_address,
    "members()": lambda node: node.members(),
    "groups()": lambda node: node.groups(),
    "counters()": lambda node: node.counters(),
    "metrics()": lambda node: node.metrics(),
    "status()": lambda node: node.status(),
    "metric_counters()": lambda node: node.metric_counters(),
}


@pytest.mark.parametrize("query", sorted(QUERY_CALLS))
def test_a_query_before_start_raises_what_the_asyncio_node_raises(
    factory: FakeFactory, query: str
) -> None:
    ask = QUERY_CALLS[query]
    with pytest.raises(CopyCatError, match="start the node first") as theirs:
        ask(copycat.CopyCat(Config()))
    cc = copycat.sync.CopyCat(Config(), node_factory=factory)
    try:
        with pytest.raises(CopyCatError, match="start the node first") as mine:
            ask(cc)
    finally:
        cc.shutdown()
    assert type(mine.value) is type(theirs.value) is CopyCatError


def test_operations_before_start_raise_copycat_error(factory: FakeFactory) -> None:
    cc = copycat.sync.CopyCat(Config(), node_factory=factory)
    try:
        for operation in (
            cc.new_data_structure_id,
            cc.allocate_data_structure,
            lambda: cc.subscribe(DataStructureId.new(), no_snapshot),
            cc.leave,
        ):
            with pytest.raises(CopyCatError, match="start the node first") as info:
                operation()
            assert type(info.value) is CopyCatError
    finally:
        cc.shutdown()


@pytest.mark.parametrize("query", sorted(QUERY_CALLS))
def test_a_query_after_shutdown_raises_closed_error(factory: FakeFactory, query: str) -> None:
    cc = copycat.sync.CopyCat(Config(), node_factory=factory)
    cc.start(timeout=SAFETY_S)
    cc.shutdown(timeout=SAFETY_S)
    with pytest.raises(ClosedError, match="node is shut down"):
        QUERY_CALLS[query](cc)


def test_start_twice_raises_copycat_error(cc: copycat.sync.CopyCat) -> None:
    with pytest.raises(CopyCatError, match="already started") as info:
        cc.start(timeout=SAFETY_S)
    assert type(info.value) is CopyCatError
    assert cc.running


def test_start_after_shutdown_raises_closed_error(factory: FakeFactory) -> None:
    cc = copycat.sync.CopyCat(Config(), node_factory=factory)
    cc.start(timeout=SAFETY_S)
    cc.shutdown(timeout=SAFETY_S)
    with pytest.raises(ClosedError, match="cannot start again"):
        cc.start(timeout=SAFETY_S)
    assert len(factory.nodes) == 1


def test_a_query_while_start_is_under_way_says_so(factory: FakeFactory) -> None:
    factory.behaviour.start_hangs = True
    cc = copycat.sync.CopyCat(Config(), node_factory=factory)
    outcome: list[BaseException] = []

    def start() -> None:
        try:
            cc.start(timeout=SAFETY_S)
        except BaseException as exc:
            outcome.append(exc)

    starter = threading.Thread(target=start, name="starter")
    starter.start()
    try:
        wait_until(lambda: bool(factory.nodes), "the node to be made")
        with pytest.raises(CopyCatError, match="still starting"):
            cc.members()
        with pytest.raises(CopyCatError, match="already started"):
            cc.start()
    finally:
        cc._loop.stop()  # cancels the hanging start
        starter.join(SAFETY_S)
    assert not starter.is_alive()
    assert len(outcome) == 1


def test_propose_on_a_closed_subscription_raises_closed_error(cc: copycat.sync.CopyCat) -> None:
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    sub.close(timeout=SAFETY_S)
    with pytest.raises(ClosedError, match="was closed: subscribe again"):
        sub.propose(b"x")


def test_propose_after_the_node_shut_down_raises_closed_error(factory: FakeFactory) -> None:
    cc = copycat.sync.CopyCat(Config(), node_factory=factory)
    cc.start(timeout=SAFETY_S)
    sub = cc.subscribe(DataStructureId.new(), no_snapshot)
    cc.shutdown(timeout=SAFETY_S)
    with pytest.raises(ClosedError, match="its node was shut down"):
        sub.propose(b"x")


def test_a_provider_that_is_not_callable_raises_argument_error(cc: copycat.sync.CopyCat) -> None:
    with pytest.raises(ArgumentError, match="snapshot_provider must be a callable"):
        cc.subscribe(DataStructureId.new(), b"state")  # type: ignore[arg-type]


def test_a_blocking_call_on_the_loop_thread_raises_copycat_error(
    cc: copycat.sync.CopyCat,
) -> None:
    async def from_the_loop() -> None:
        cc.members()

    future = asyncio.run_coroutine_threadsafe(from_the_loop(), cc._loop.loop)
    with pytest.raises(CopyCatError, match="deadlock") as info:
        future.result(SAFETY_S)
    assert type(info.value) is CopyCatError
