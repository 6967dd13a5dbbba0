"""The API's edge: every mistake a user can make at it raises a `CopyCatError` exported
from `copycat`, of a type that says what kind of mistake it is, whose message names the
thing (the file, the address, the limit, the argument, the cluster).

Real nodes run in a subprocess (real gossip nodes never run inside pytest's process);
this module is also that process's script,
and each check there records the type and message of what was raised."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import copycat
import copycat.errors
from tests.sync._subprocess import main_then_exit, run_life

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.timeout(120)

LIMIT = (16 << 20) - (64 << 10)
"""The documented proposal limit (README, "Limits")."""


def test_every_error_class_is_exported_from_copycat() -> None:
    for name in copycat.errors.__all__:
        assert getattr(copycat, name) is getattr(copycat.errors, name), name
        assert name in copycat.__all__
    assert issubclass(copycat.ConfigError, copycat.CopyCatError)
    assert issubclass(copycat.NotEnoughNodesError, copycat.CopyCatError)


def test_new_error_types_are_also_the_builtin_ones_callers_caught_before() -> None:
    assert issubclass(copycat.ArgumentError, TypeError)  # propose(str) raised TypeError
    assert issubclass(copycat.AddressInUseError, OSError)  # a bind raised OSError
    error = copycat.AddressInUseError("gossip", "127.0.0.1:7459", "UDP or TCP port")
    assert "127.0.0.1:7459" in str(error)
    assert (error.what, error.address) == ("gossip", "127.0.0.1:7459")


@pytest.mark.asyncio
async def test_a_proposal_over_the_limit_fails_at_once_on_a_follower_too() -> None:
    """With the leader on another node the proposal used to be forwarded, logged once a
    second and fail after 30 s as 'may still commit'; now it is refused at the call."""
    from copycat.host import Session
    from tests.host.conftest import Cluster

    cluster = Cluster()
    try:
        for node_id in (1, 2, 3):
            await cluster.add(node_id)
        leader = await cluster.start_group(7, [1, 2, 3])
        follower = next(i for i in (1, 2, 3) if i != leader)
        async with asyncio.timeout(5):
            with pytest.raises(copycat.MessageTooLargeError) as info:
                await cluster.hosts[follower].propose(7, Session(), b"x" * (LIMIT + 1))
        assert f"limit of {LIMIT:,} bytes" in str(info.value)
        assert (info.value.size, info.value.limit) == (LIMIT + 1, LIMIT)
        await cluster.hosts[follower].propose(7, Session(), b"x" * 1024)  # still fine
    finally:
        await cluster.close()


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    root = tmp_path_factory.mktemp("edge")
    result: dict[str, dict[str, str]] = run_life("tests.test_api_edge", str(root), tag="result")
    return result


@pytest.mark.parametrize(
    ("check", "error", "named"),
    [
        ("start_after_shutdown", "ClosedError", ["shut down", "new CopyCat"]),
        ("provider_not_callable", "ArgumentError", ["snapshot_provider", "callable", "bytes"]),
        ("propose_not_bytes", "ArgumentError", ["proposals are bytes", "str"]),
        ("propose_too_large", "MessageTooLargeError", [f"limit of {LIMIT:,} bytes"]),
        ("transport_port_in_use", "AddressInUseError", ["transport", "{transport}"]),
        ("gossip_port_in_use", "AddressInUseError", ["gossip", "{gossip}"]),
        ("missing_tls_file", "ConfigError", ["tls_ca_file", "{missing}"]),
        ("other_cluster", "ConfigError", ["cluster_name", "'first'", "'second'", "{dir_e}"]),
        ("other_node_id", "ConfigError", ["node_id", "{dir_f}"]),
        ("propose_inside_commit_loop", "CopyCatError", ["wait_delivered", "wait forever"]),
        ("wait_inside_commit_loop", "CopyCatError", ["wait forever", "another task"]),
        ("position_not_int", "ArgumentError", ["position", "'3'"]),
        ("barrier_after_close", "ClosedError", ["closed"]),
    ],
)
def test_each_mistake_raises_its_type_naming_the_thing(
    checks: dict[str, dict[str, str]], check: str, error: str, named: list[str]
) -> None:
    got = checks[check]
    assert got["type"] == error, got
    assert issubclass(getattr(copycat, got["type"]), copycat.CopyCatError)
    for part in named:
        text = part.format(**checks["where"])
        assert text in got["message"], (text, got["message"])


def test_propose_returns_the_position_and_barriers_read_your_writes(
    checks: dict[str, Any],
) -> None:
    assert checks["read_your_writes"]["seen"], "propose(wait_delivered=True) returned early"
    assert checks["read_your_writes"]["position"] > 0
    assert checks["barrier"] == {"at_least_position": True, "seen": 1}
    assert checks["metrics"] == {"read_barriers": True, "read_index_rounds": True}


# -- the node process -----------------------------------------------------------------------


async def _record(out: dict[str, dict[str, str]], name: str, attempt: Awaitable[Any]) -> None:
    try:
        await attempt
    except Exception as exc:  # what the check is about: record its type and message
        out[name] = {"type": type(exc).__name__, "message": str(exc)}
    else:
        out[name] = {"type": "nothing raised", "message": ""}


async def _read_your_writes(out: dict[str, Any], cc: Any, sub: Any) -> None:
    """Positions, read-your-writes and barriers on a running node, and their mistakes."""
    seen: list[bytes] = []
    inside: dict[str, dict[str, str]] = {}
    recorded = asyncio.Event()

    async def commit_loop() -> None:
        async for item in sub.commits():
            assert isinstance(item, bytes)
            seen.append(item)
            if item == b"inside":
                await _record(inside, "propose", sub.propose(b"x", wait_delivered=True))
                await _record(inside, "wait", sub.wait_delivered(sub.position + 1))
                recorded.set()

    consumer = asyncio.ensure_future(commit_loop())
    position = await sub.propose(b"mine", wait_delivered=True)
    out["read_your_writes"] = {"seen": b"mine" in seen, "position": position}
    await sub.propose(b"inside")
    async with asyncio.timeout(10):
        await recorded.wait()
    out["propose_inside_commit_loop"] = inside["propose"]
    out["wait_inside_commit_loop"] = inside["wait"]
    barrier = await sub.read_barrier()
    out["barrier"] = {"at_least_position": barrier >= position, "seen": seen.count(b"inside")}
    await _record(out, "position_not_int", sub.wait_delivered("3"))
    out["metrics"] = {
        name: f'copycat_host_events_total{{event="{name}"}}' in cc.metrics().decode()
        for name in ("read_barriers", "read_index_rounds")
    }
    await sub.close()
    await _record(out, "barrier_after_close", sub.read_barrier())
    consumer.cancel()


def _taken_port(kind: int) -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock, int(sock.getsockname()[1])


async def _life(root: Path) -> dict[str, Any]:
    from copycat import Config, CopyCat

    out: dict[str, Any] = {}

    def local(name: str, **overrides: Any) -> Config:
        return Config.local(data_dir=str(root / name), **overrides)

    cc = CopyCat(local("a"))
    await cc.start()
    ds = await cc.allocate_data_structure(replicas=1)
    provider: Callable[[], bytes] = lambda: b""  # noqa: E731
    await _record(out, "provider_not_callable", cc.subscribe(ds, b""))  # type: ignore[arg-type]
    sub = await cc.subscribe(ds, provider)
    await _record(out, "propose_not_bytes", sub.propose("text"))  # type: ignore[arg-type]
    await _record(out, "propose_too_large", sub.propose(b"x" * (LIMIT + 1)))
    await sub.propose(b"fits")
    await _read_your_writes(out, cc, sub)
    await cc.shutdown()
    await _record(out, "start_after_shutdown", cc.start())

    held, port = _taken_port(socket.SOCK_STREAM)
    with contextlib.closing(held):
        await _record(out, "transport_port_in_use", CopyCat(local("b", port=port)).start())
    udp, gossip = _taken_port(socket.SOCK_DGRAM)
    with contextlib.closing(udp):
        await _record(out, "gossip_port_in_use", CopyCat(local("c", gossip_port=gossip)).start())

    missing = root / "no-such-ca.pem"
    tls = {"tls_ca_file": str(missing), "tls_cert_file": "n.pem", "tls_key_file": "n.key"}
    await _record(out, "missing_tls_file", CopyCat(local("d", **tls)).start())

    async with CopyCat(local("e", cluster_name="first")):
        pass
    await _record(out, "other_cluster", CopyCat(local("e", cluster_name="second")).start())
    async with CopyCat(local("f", node_id=5)):
        pass
    await _record(out, "other_node_id", CopyCat(local("f", node_id=6)).start())

    out["where"] = {
        "transport": f"127.0.0.1:{port}",
        "gossip": f"127.0.0.1:{gossip}",
        "missing": str(missing),
        "dir_e": str(root / "e"),
        "dir_f": str(root / "f"),
    }
    return out


def _main() -> None:
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    root = Path(sys.argv[1])

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(90):
            return await _life(root)

    print("result " + json.dumps(asyncio.run(bounded())), flush=True)


if __name__ == "__main__":
    main_then_exit(_main)


@pytest.mark.parametrize(
    ("kind", "level", "said"),
    [
        ("MemberJoined", logging.INFO, "joined"),
        ("MemberRecovered", logging.INFO, "is back"),
        ("MemberLeft", logging.INFO, "left the cluster"),
        ("MemberFailed", logging.WARNING, "failed"),
    ],
)
def test_member_joins_failures_and_departures_are_logged(
    kind: str, level: int, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    from copycat import _node, membership
    from copycat.membership._view import MemberState

    member = membership.MemberInfo(
        node_id=7,
        transport_address="10.0.0.7:7458",
        data_center="eu-west",
        rack="r2",
        state=MemberState.ALIVE,
        epoch=1,
        gossip_address="10.0.0.7:7459",
        directory_version=0,
    )
    named = dataclasses.replace(member, name="eu-west-1b")
    with caplog.at_level(logging.INFO, logger="copycat"):
        _node._log_member_event(getattr(membership, kind)(member=member))
        _node._log_member_event(getattr(membership, kind)(member=named))
    (record, named_record) = caplog.records
    assert record.levelno == named_record.levelno == level
    assert "member 10.0.0.7:7458 (node 7, eu-west/r2)" in record.getMessage()
    assert "member eu-west-1b (node 7, 10.0.0.7:7458, eu-west/r2)" in named_record.getMessage()
    assert said in record.getMessage()


_NO_LOGGING_PROGRAM = """
import asyncio, sys, tempfile
import copycat

async def main() -> None:
    config = copycat.Config.local(
        data_dir=tempfile.mkdtemp(), log_format=sys.argv[1], node_name=sys.argv[2] or None
    )
    async with copycat.CopyCat(config) as cc:
        print(cc.name, flush=True)
        ds = await cc.allocate_data_structure(replicas=1)
        await (await cc.subscribe(ds, lambda: b"")).propose(b"x")

asyncio.run(main())
"""


@pytest.mark.parametrize("node_name", ["", "eu-west-1a"])
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_program_that_configured_no_logging_gets_time_level_and_node(
    log_format: str, node_name: str
) -> None:
    """Every line has time and level, and names the node: `node_name`, else the
    transport address the node publishes (what `CopyCat.name` returns)."""
    import re
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _NO_LOGGING_PROGRAM, log_format, node_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    name = done.stdout.strip()
    assert name == (node_name or name), done.stdout
    if not node_name:
        assert re.fullmatch(r"127\.0\.0\.1:\d+", name), name
    lines = [line for line in done.stderr.splitlines() if line and "kinship" not in line]
    assert lines, done.stderr
    assert any("started" in line for line in lines), done.stderr
    for line in lines:
        if log_format == "json":
            record = json.loads(line)
            assert set(record) >= {"time", "level", "node", "logger", "message"}
            assert record["logger"].startswith("copycat")
            assert record["node"] == name, line
        else:
            pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) \[(.+?)\] copycat"
            match = re.match(pattern, line)
            assert match is not None, line
            assert match.group(2) == name, line


_ALLOCATE_AT_ONCE_PROGRAM = """
import asyncio, tempfile
import copycat

async def main() -> None:
    root = tempfile.mkdtemp()
    a = copycat.CopyCat(copycat.Config.local(data_dir=root + "/a"))
    await a.start()
    peers = [a.gossip_address]
    b = copycat.CopyCat(copycat.Config.local(data_dir=root + "/b", peers_to_contact=peers))
    await b.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(a.members()) < 2 and loop.time() < deadline:
        await asyncio.sleep(0)  # one loop turn at a time: act the moment the view has b
    ds = await a.allocate_data_structure(replicas=2)  # b's event may still lag the view
    sub = await b.subscribe(ds, lambda: b"")
    await sub.propose(b"x")
    await b.shutdown()
    await a.shutdown()
    print("clean")

asyncio.run(main())
"""


@pytest.mark.parametrize("attempt", range(5))
def test_allocating_right_after_a_node_joins_reaches_it_and_exits_cleanly(attempt: int) -> None:
    """Placement may pick a node the view lists before the endpoint learned its address
    ("node N is not a known peer", every run before the fix). The program ends by
    returning from main: no os._exit, and the interpreter's exit is clean."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _ALLOCATE_AT_ONCE_PROGRAM],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "not a known peer" not in done.stderr
    assert done.stdout.strip() == "clean", done.stderr
    assert done.returncode == 0, done.stderr
    assert "dropped without leave() or close()" not in done.stderr
