"""Drive CopyCat node processes (node_proc.py) from a test: start, command, read
events, kill -9, restart. Every process started here is killed by `close()`; waits are
bounded."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Callable

NODE_PROC = Path(__file__).with_name("node_proc.py")


def free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class NodeProcess:
    node_id: int
    data_dir: Path
    port: int
    gossip_port: int
    peers: list[str]
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    events: queue.Queue[dict[str, object]] = field(default_factory=queue.Queue)
    log: list[dict[str, object]] = field(default_factory=list)
    err: BinaryIO | None = None
    ready: dict[str, object] = field(default_factory=dict)
    """The `ready` event of its last start: its id, pid, and whether its store fsyncs."""

    def start(self) -> None:
        args = [
            sys.executable,
            str(NODE_PROC),
            f"--node-id={self.node_id}",
            f"--data-dir={self.data_dir}",
            f"--port={self.port}",
            f"--gossip-port={self.gossip_port}",
            f"--peers={','.join(self.peers)}",
            *self.extra,
        ]
        self.events = queue.Queue()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr(),
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, args=(self.proc, self.events), daemon=True).start()
        self.ready = self.wait_for("ready", timeout_s=30)

    def _stderr(self) -> int:
        """The node's stderr goes to a file beside its data dir, for post-mortems."""
        if self.err is not None:
            self.err.close()
        self.err = open(self.data_dir.parent / f"node{self.node_id}.err", "ab")  # noqa: SIM115
        return self.err.fileno()

    @staticmethod
    def _read(proc: subprocess.Popen[str], events: queue.Queue[dict[str, object]]) -> None:
        assert proc.stdout is not None
        # kill() closes the pipe under this thread: the read then ends with ValueError
        # (or OSError), which is the end of the stream, not a failure
        with contextlib.suppress(ValueError, OSError):
            for line in proc.stdout:
                try:
                    events.put(json.loads(line))
                except json.JSONDecodeError:
                    continue

    def send(self, **command: object) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def next_event(self, timeout_s: float) -> dict[str, object] | None:
        try:
            event = self.events.get(timeout=timeout_s)
        except queue.Empty:
            return None
        self.log.append(event)
        return event

    def wait_for(self, name: str, timeout_s: float = 20.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if event is not None and event.get("event") == name:
                return event
            if event is not None and event.get("event") == "error":
                raise AssertionError(f"node {self.node_id}: {event}")
        raise AssertionError(f"node {self.node_id}: no {name!r} event within {timeout_s} s")

    def wait_for_any(self, names: set[str], timeout_s: float = 20.0) -> dict[str, object]:
        """The next event named one of `names` (an "error" event among them counts)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if event is not None and event.get("event") in names:
                return event
        raise AssertionError(f"node {self.node_id}: none of {names} within {timeout_s} s")

    def pause(self) -> None:
        """SIGSTOP: the process stops, gossip and raft alike (a long GC pause, a VM
        freeze)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def drain(self) -> None:
        while self.next_event(0) is not None:
            pass

    def kill(self) -> None:
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGCONT)  # a paused process dies at once
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self.err is not None:
            self.err.close()
            self.err = None
        self.drain()


@dataclass
class ProcessCluster:
    root: Path
    nodes: dict[int, NodeProcess] = field(default_factory=dict)

    def add(self, node_id: int, *, extra: list[str] | None = None) -> NodeProcess:
        port, gossip = free_ports(2)
        peers = [f"127.0.0.1:{n.gossip_port}" for n in self.nodes.values()]
        node = NodeProcess(
            node_id=node_id,
            data_dir=self.root / f"node{node_id}",
            port=port,
            gossip_port=gossip,
            peers=peers,
            extra=extra or [],
        )
        self.nodes[node_id] = node
        node.start()
        return node

    def wait_members(self, count: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        for node in self.nodes.values():
            while True:
                node.send(op="members")
                if node.wait_for("members", timeout_s)["count"] == count:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"node {node.node_id} does not see {count} members")
                time.sleep(0.1)

    def close(self) -> None:
        for node in self.nodes.values():
            node.kill()


def status(node: NodeProcess) -> dict[str, dict[str, object]]:
    """The node's groups as its `status` op reports them, by data structure id."""
    node.send(op="status")
    return node.wait_for("status", 20)["groups"]  # type: ignore[return-value]


def seen_by_leaders(nodes: list[NodeProcess], kind: str = "voters") -> dict[str, list[int]]:
    """Each group's `kind` ("voters" or "learners"), as the node that leads it says."""
    out: dict[str, list[int]] = {}
    for node in nodes:
        for gid, g in status(node).items():
            if g["role"] == "LEADER":
                out[gid] = list(g[kind])  # type: ignore[call-overload]
    return out


def voters_seen_by_leaders(nodes: list[NodeProcess]) -> dict[str, list[int]]:
    return seen_by_leaders(nodes, "voters")


def learners_seen_by_leaders(nodes: list[NodeProcess]) -> dict[str, list[int]]:
    return seen_by_leaders(nodes, "learners")


def proposed(node: NodeProcess, prefix: str) -> bool:
    """Whether the node finished proposing `prefix` (reading any pending events)."""
    node.drain()
    return any(e.get("event") == "proposed" and e.get("prefix") == prefix for e in node.log)


def delivered(node: NodeProcess, ds: str) -> list[str]:
    """What the node's subscriber of `ds` holds now, replayed from its events: commits
    appended in order, a loaded snapshot replacing everything before it."""
    node.drain()
    state: list[str] = []
    for e in node.log:
        if e.get("id") != ds:
            continue
        if e.get("event") == "commit":
            state.append(str(e["data"]))
        elif e.get("event") == "load_snapshot":
            state = [str(x) for x in e["state"]]  # type: ignore[attr-defined]
    return state


def acked(node: NodeProcess) -> list[str]:
    node.drain()
    return [str(e["data"]) for e in node.log if e.get("event") == "acked"]


def check_streams(
    nodes: list[NodeProcess], ds: str, wanted: set[str], timeout_s: float = 60
) -> dict[int, list[str]]:
    """Wait until every live subscriber of `ds` among `nodes` holds `wanted`; check that
    each delivered every value once and that all streams are prefixes of one order.
    Returns the streams by node id."""
    live = [n for n in nodes if n.proc is not None and n.proc.poll() is None]
    subscribed = [n for n in live if any(e.get("event") == "subscribed" for e in n.log)]
    for node in subscribed:
        wait_until(
            lambda node=node: wanted <= set(delivered(node, ds)),
            timeout_s,
            f"node {node.node_id} delivered every acknowledged value",
        )
    streams = {node.node_id: delivered(node, ds) for node in subscribed}
    for node_id, stream in streams.items():
        assert len(stream) == len(set(stream)), f"node {node_id} delivered a value twice"
    longest = max(streams.values(), key=len, default=[])
    for node_id, stream in streams.items():
        assert stream == longest[: len(stream)], f"node {node_id} delivered another order"
    return streams


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"not reached within {timeout_s} s: {what}")
