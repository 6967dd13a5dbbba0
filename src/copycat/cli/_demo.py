# `copycat demo`: a 3-node cluster of real processes on loopback that replicates a
# hashmap, loses a node to SIGKILL, keeps writing, and brings the node back.
#
# What lives here: the driver. It never runs a node itself: each node is a
# `python -m copycat.cli._worker` process with its own temporary data dir and fixed
# free ports (a restarted node keeps its gossip port), driven by JSON lines.
#
# Rules it keeps:
# 1. Every wait is bounded; a step that does not finish in time fails the demo with a
#    message naming the node and what was missing.
# 2. It kills exactly the processes it started (by their handles), and removes its
#    temporary directory, on success, on failure, on Ctrl-C and on SIGTERM. Workers run
#    in their own sessions, so Ctrl-C reaches the driver only; a worker whose driver
#    died sees its stdin close and shuts down.
# 3. The driver computes the expected map with the same `HashMap` the nodes run, and a
#    node "has" the data when its map's digest equals the expected one.
#
# What must not: import or start a CopyCat node in this process.
"""The `copycat demo` command."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, TextIO

from copycat.cli._hashmap import HashMap, delete_command, put_command

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

__all__: Final = ["DemoError", "run"]

NODES: Final = 3
SNAPSHOT_EVERY_ENTRIES: Final = 50
"""Small, so that the members compact their logs often."""
SNAPSHOT_KEEP_ENTRIES: Final = 20
"""Entries a member keeps below its snapshot when it compacts: few, so that the node
that was down falls behind the compaction point and catches up from a snapshot shipped
by another member, not from the log alone."""
FIRST_KEYS: Final = 100
MORE_KEYS: Final = 300
"""Written while node 3 is down: several snapshots' worth."""
DELETED_KEYS: Final = 25
START_TIMEOUT_S: Final = 20.0
STEP_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0
POLL_INTERVAL_S: Final = 0.1


class DemoError(Exception):
    """A step failed; the message says which and why."""


class _Interrupted(BaseException):
    """SIGTERM reached the driver (handled like Ctrl-C)."""


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that were free a moment ago on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]


@dataclass
class _Node:
    node_id: int
    data_dir: Path
    port: int
    gossip_port: int
    peers: list[str]
    log_path: Path
    proc: subprocess.Popen[str] | None = None
    events: queue.Queue[dict[str, object] | None] = field(default_factory=queue.Queue)
    snapshot_loads: list[int] = field(default_factory=list)
    _log_file: IO[bytes] | None = None

    def start(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.events = queue.Queue()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "copycat.cli._worker",
                f"--node-id={self.node_id}",
                f"--data-dir={self.data_dir}",
                f"--port={self.port}",
                f"--gossip-port={self.gossip_port}",
                f"--peers={','.join(self.peers)}",
                f"--snapshot-every-entries={SNAPSHOT_EVERY_ENTRIES}",
                f"--snapshot-keep-entries={SNAPSHOT_KEEP_ENTRIES}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        threading.Thread(
            target=_read_lines, args=(self.proc.stdout, self.events), daemon=True
        ).start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _next(self, deadline: float, what: str) -> dict[str, object]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DemoError(f"node {self.node_id}: no answer to {what} in time")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                code = self.proc.wait(timeout=STOP_TIMEOUT_S) if self.proc else None
                raise DemoError(
                    f"node {self.node_id} exited (code {code}) while waiting for {what}"
                )
            if event.get("event") == "load_snapshot":
                size = event.get("size")
                self.snapshot_loads.append(size if isinstance(size, int) else -1)
                continue
            return event

    def wait_ready(self, timeout_s: float) -> None:
        event = self._next(time.monotonic() + timeout_s, "start")
        if event.get("event") != "ready":
            raise DemoError(f"node {self.node_id} did not start: {event.get('message', event)}")

    def call(self, op: str, timeout_s: float = STEP_TIMEOUT_S, **args: object) -> dict[str, object]:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise DemoError(f"node {self.node_id} is not running")
        try:
            proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            proc.stdin.flush()
        except OSError as exc:
            raise DemoError(f"node {self.node_id}: cannot send {op!r}: {exc}") from None
        event = self._next(time.monotonic() + timeout_s, repr(op))
        if event.get("event") == "error":
            raise DemoError(f"node {self.node_id}: {op} failed: {event.get('message')}")
        if event.get("event") != "reply" or event.get("op") != op:
            raise DemoError(f"node {self.node_id}: unexpected answer to {op!r}: {event}")
        return event

    def kill(self) -> None:
        """SIGKILL this node's process (only it: the handle names the pid we started)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT_S)
        self._close_streams()

    def ask_to_stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                proc.stdin.close()

    def wait_stopped(self, timeout_s: float) -> bool:
        """Wait for the process to exit; SIGKILL it if it does not in time. True if it
        exited by itself with code 0."""
        proc = self.proc
        clean = True
        if proc is not None:
            try:
                clean = proc.wait(timeout=timeout_s) == 0
            except subprocess.TimeoutExpired:
                clean = False
        self.kill()
        return clean

    def _close_streams(self) -> None:
        proc = self.proc
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 12) -> list[str]:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


def _read_lines(stream: TextIO, events: queue.Queue[dict[str, object] | None]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for line in stream:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.put(event)
    events.put(None)


@dataclass
class _Demo:
    root: Path
    out: TextIO
    started: float = field(default_factory=time.monotonic)
    nodes: dict[int, _Node] = field(default_factory=dict)
    expected: HashMap = field(default_factory=HashMap)

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {message}", file=self.out, flush=True)

    def make_nodes(self) -> None:
        ports = free_ports(2 * NODES)
        first_gossip = ports[1]
        for i in range(NODES):
            node_id = i + 1
            self.nodes[node_id] = _Node(
                node_id=node_id,
                data_dir=self.root / f"node{node_id}",
                port=ports[2 * i],
                gossip_port=ports[2 * i + 1],
                peers=[] if i == 0 else [f"127.0.0.1:{first_gossip}"],
                log_path=self.root / f"node{node_id}.log",
            )

    def start(self, nodes: list[_Node]) -> None:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready(START_TIMEOUT_S)
            pid = node.proc.pid if node.proc else 0
            self.say(
                f"node {node.node_id} started (pid {pid}, transport 127.0.0.1:{node.port}, "
                f"gossip 127.0.0.1:{node.gossip_port})"
            )

    def wait_members(self, nodes: list[_Node], count: int) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        for node in nodes:
            while True:
                seen = node.call("members")["count"]
                if seen == count:
                    break
                if time.monotonic() > deadline:
                    raise DemoError(f"node {node.node_id} sees {seen} members, not {count}")
                time.sleep(POLL_INTERVAL_S)

    def write(self, node: _Node, puts: list[tuple[str, str]], deletes: list[str]) -> str:
        """Write through `node`; returns how long it took, as text."""
        reply = node.call(
            "write",
            timeout_s=STEP_TIMEOUT_S + 10,
            puts=[list(p) for p in puts],
            deletes=deletes,
            concurrency=16,
        )
        failed = reply.get("failed")
        if failed:
            raise DemoError(f"node {node.node_id}: some writes failed: {failed}")
        for key, value in puts:
            self.expected.apply(put_command(key, value))
        for key in deletes:
            self.expected.apply(delete_command(key))
        elapsed, slowest = reply.get("elapsed_s"), reply.get("slowest_s")
        if not isinstance(elapsed, float | int) or not isinstance(slowest, float | int):
            return "time unknown"
        return f"{elapsed:.1f} s, 16 in flight, slowest {slowest * 1000:.0f} ms"

    def wait_caught_up(self, node: _Node, sample: str) -> dict[str, object]:
        """Poll `node` (local reads) until its map equals the expected one."""
        deadline = time.monotonic() + STEP_TIMEOUT_S
        want = self.expected.digest()
        while True:
            state = node.call("state", keys=[sample])
            if state.get("digest") == want:
                return state
            if time.monotonic() > deadline:
                raise DemoError(
                    f"node {node.node_id} did not catch up within {STEP_TIMEOUT_S:g} s: it has "
                    f"{state.get('size')} keys, expected {len(self.expected)}"
                )
            time.sleep(POLL_INTERVAL_S)

    def check_read(self, node: _Node, key: str) -> None:
        state = self.wait_caught_up(node, key)
        values = state.get("values")
        got = values.get(key) if isinstance(values, dict) else None
        if got != self.expected.get(key):
            raise DemoError(
                f"node {node.node_id}: {key} = {got!r}, expected {self.expected.get(key)!r}"
            )
        self.say(
            f"node {node.node_id} has all {len(self.expected)} keys (local read: {key} = {got!r})"
        )

    def run(self) -> list[str]:
        """The demo's steps; returns the summary lines."""
        self.make_nodes()
        n1, n2, n3 = (self.nodes[i] for i in range(1, NODES + 1))
        self.start([n1])
        self.start([n2, n3])
        self.wait_members([n1, n2, n3], NODES)
        self.say(f"all {NODES} nodes see each other (SWIM gossip)")

        ds = n1.call("allocate", replicas=NODES)["id"]
        self.say(f"allocated the hashmap {ds} with {NODES} replicas")
        for node in (n1, n2, n3):
            node.call("subscribe", id=ds)
        self.say("subscribed to it on nodes 1, 2 and 3")

        first = [(f"key-{i:04d}", f"value-{i}") for i in range(FIRST_KEYS)]
        took = self.write(n1, first, [])
        self.say(f"wrote {FIRST_KEYS} keys through node 1 ({took})")
        for node in (n2, n3):
            self.check_read(node, "key-0042")

        n3.kill()
        self.say("killed node 3 (SIGKILL)")
        more = [(f"key-{i:04d}", f"value-{i}") for i in range(FIRST_KEYS, FIRST_KEYS + MORE_KEYS)]
        gone = [f"key-{i:04d}" for i in range(DELETED_KEYS)]
        took = self.write(n1, more, gone)
        self.say(
            f"wrote {MORE_KEYS} more keys and deleted {DELETED_KEYS} through node 1 "
            f"while node 3 was down ({took})"
        )
        self.check_read(n2, f"key-{FIRST_KEYS + 7:04d}")

        restarted = time.monotonic()
        loads_before = len(n3.snapshot_loads)
        self.start([n3])
        self.say("restarted node 3 (same ports, same data dir)")
        n3.call("subscribe", id=ds)
        state = self.wait_caught_up(n3, "key-0001")
        catch_up_s = time.monotonic() - restarted
        loads = n3.snapshot_loads[loads_before:]
        values = state.get("values")
        deleted = values.get("key-0001", "?") if isinstance(values, dict) else "?"
        self.say(
            f"node 3 caught up in {catch_up_s:.1f} s: {len(self.expected)} keys, same contents "
            f"as node 1 (local read: key-0001 = {deleted!r}, deleted while it was down)"
        )
        self.wait_members([n3], NODES)
        self.say(f"node 3 sees all {NODES} members again (rejoined the gossip)")
        puts, deletes = FIRST_KEYS + MORE_KEYS, DELETED_KEYS
        return [
            f"  keys written      {puts} puts and {deletes} deletes through node 1 "
            f"({len(self.expected)} keys live)",
            f"  nodes             {NODES} processes on 127.0.0.1; node 3 killed with SIGKILL "
            "and restarted",
            f"  catch-up          {catch_up_s:.2f} s from restart to the same contents",
            f"  snapshot loaded   {_describe_loads(loads, FIRST_KEYS, state.get('commits'))}",
            f"  snapshots         every {SNAPSHOT_EVERY_ENTRIES} entries, compacting the log "
            f"to {SNAPSHOT_KEEP_ENTRIES} entries below each",
        ]

    def stop_all(self) -> bool:
        """Stop every node cleanly (in parallel); SIGKILL stragglers. True if all exited
        cleanly."""
        for node in self.nodes.values():
            node.ask_to_stop()
        return all([node.wait_stopped(STOP_TIMEOUT_S) for node in self.nodes.values()])

    def kill_all(self) -> None:
        for node in self.nodes.values():
            node.kill()


def _describe_loads(loads: list[int], keys_at_kill: int, commits: object) -> str:
    """What the restarted node's snapshot loads show. A snapshot holding more keys than
    the node had when it was killed cannot be its own: another member shipped it."""
    replayed = f"{commits} commits" if isinstance(commits, int) else "the rest"
    if not loads:
        return f"no: it caught up from the log alone ({replayed})"
    shipped = [size for size in loads if size > keys_at_kill]
    sizes = ", then ".join(f"{size} keys" for size in loads)
    if shipped:
        return (
            f"yes: {len(loads)} load(s) ({sizes}); a snapshot shipped by another member "
            f"after it fell behind the compaction point, then {replayed} from the log"
        )
    return (
        f"yes: its own snapshot ({sizes}) only, then {replayed} from the log (no "
        "member had compacted past it)"
    )


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(*, keep_data: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`copycat demo`: 0 on success, 1 when a step fails, 130 on Ctrl-C (SIGINT), 143 on
    SIGTERM."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    root = Path(tempfile.mkdtemp(prefix="copycat-demo-"))
    demo = _Demo(root=root, out=out)
    print(
        f"copycat demo: {NODES} nodes on 127.0.0.1, data in {root} (snapshot every "
        f"{SNAPSHOT_EVERY_ENTRIES} entries, keeping {SNAPSHOT_KEEP_ENTRIES} below it)",
        file=out,
        flush=True,
    )
    code = 0
    with _sigterm_interrupts():
        try:
            summary = demo.run()
            clean = demo.stop_all()
            demo.say("stopped the nodes" + ("" if clean else " (some had to be killed)"))
            print("summary:", file=out)
            for line in summary:
                print(line, file=out)
            print(f"  total time        {time.monotonic() - demo.started:.1f} s", file=out)
            print("demo OK", file=out, flush=True)
        except DemoError as exc:
            code = 1
            print(f"copycat demo: FAILED: {exc}", file=err)
            for node in demo.nodes.values():
                tail = node.log_tail()
                if tail:
                    print(f"--- last lines of node {node.node_id}'s log ---", file=err)
                    for line in tail:
                        print(f"    {line}", file=err)
            err.flush()
        except OSError as exc:
            code = 1
            print(f"copycat demo: FAILED: {exc}", file=err, flush=True)
        except (KeyboardInterrupt, _Interrupted) as exc:
            code = 143 if isinstance(exc, _Interrupted) else 130
            what = "terminated" if isinstance(exc, _Interrupted) else "interrupted"
            print(f"copycat demo: {what}; stopping its node processes", file=err, flush=True)
        finally:
            demo.kill_all()
            if keep_data:
                print(f"copycat demo: data and node logs kept in {root}", file=err)
            else:
                shutil.rmtree(root, ignore_errors=True)
    return code
