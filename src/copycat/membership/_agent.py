# A membership node in its own process, driven by JSON lines on stdin, for the multi-process
# tests (tests/membership/) and the benchmark (benchmarks/membership.py).
#
# What lives here: `python -m copycat.membership._agent --node-id N ...` starts one
# `Membership`, prints {"ready": ...} and then answers one JSON line per command, each
# tagged with the command's "rid". Every event it sees is recorded with its wall-clock time,
# so a driver can time detection and convergence across processes, and every warning the
# membership logs, so a driver can check what an operator would read.
#
# What must not: be imported by the library. It is a test and benchmark tool, private.
"""Test and benchmark agent: one membership node per process, driven over stdin/stdout."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from typing import Final

from copycat.membership._config import MembershipConfig
from copycat.membership._directory import DirectoryEntry, Role
from copycat.membership._membership import Membership
from copycat.membership._view import (
    DirectoryChanged,
    EventsLost,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberRecovered,
    MembershipEvent,
    MemberSuspect,
    MemberUpdated,
)

_POLL_S: Final = 0.005
_MAX_EVENTS: Final = 100_000
_MAX_WARNINGS: Final = 1_000

_ROLE_NAMES: Final = {role.name.lower(): role for role in Role}


def _event_record(event: MembershipEvent) -> list[object]:
    now = time.time()
    match event:
        case MemberJoined(member=m):
            return [now, "joined", m.node_id, m.epoch]
        case MemberSuspect(member=m):
            return [now, "suspect", m.node_id, m.epoch]
        case MemberRecovered(member=m):
            return [now, "recovered", m.node_id, m.epoch]
        case MemberFailed(member=m):
            return [now, "failed", m.node_id, m.epoch]
        case MemberLeft(member=m):
            return [now, "left", m.node_id, m.epoch]
        case MemberUpdated(member=m):
            return [now, "updated", m.node_id, m.epoch]
        case DirectoryChanged(node_id=node, version=version, full=full):
            return [now, "directory", node, version, full]
        case EventsLost(count=count):
            return [now, "lost", count, 0]


def _ds(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}"


class _WarningRecorder(logging.Handler):
    """Keeps the first `_MAX_WARNINGS` warnings of the membership logger, formatted."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < _MAX_WARNINGS:
            self.messages.append(record.getMessage())


class Agent:
    def __init__(self, membership: Membership, warnings: _WarningRecorder) -> None:
        self.m = membership
        self.events: list[list[object]] = []
        self.warnings = warnings

    async def record(self) -> None:
        async for event in self.m.events():
            if len(self.events) < _MAX_EVENTS:
                self.events.append(_event_record(event))

    def status(self) -> dict[str, object]:
        view = self.m.view()
        return {
            "node_id": self.m.node_id,
            "epoch": self.m.epoch,
            "gossip_address": self.m.gossip_address,
            "members": {str(m.node_id): m.state.value for m in view},
            "topology": {dc: dict(racks) for dc, racks in view.topology().items()},
            "directory_version": self.m.directory_version,
            "peers": {
                str(m.node_id): self.m.peer_directory_version(m.node_id)
                for m in view
                if m.node_id != self.m.node_id
            },
            "counters": {
                name: getattr(self.m.counters(), name)
                for name in type(self.m.counters()).__dataclass_fields__
            },
            "key_ids": self.m.key_ids(),
        }

    def located(self, node: int, prefix: str, count: int, start: int, role: Role) -> int:
        found = 0
        for i in range(start, start + count):
            if any(r.node_id == node and r.role is role for r in self.m.locate(_ds(prefix, i))):
                found += 1
        return found

    async def handle(self, cmd: dict[str, object]) -> object:
        op = cmd["op"]
        if op == "status":
            return self.status()
        if op == "events":
            return self.events
        if op == "warnings":
            return self.warnings.messages
        if op == "publish":
            prefix, count = str(cmd["prefix"]), int(str(cmd["count"]))
            start = int(str(cmd.get("start", 0)))
            role = _ROLE_NAMES[str(cmd.get("role", "voter"))]
            upsert = [
                DirectoryEntry(
                    data_structure_id=_ds(prefix, i),
                    group_id=int(str(cmd.get("group_base", 1_000_000))) + i,
                    replica_id=self.m.node_id,
                    role=role,
                )
                for i in range(start, start + count)
            ]
            before = time.time()
            version = self.m.publish(upsert=upsert)
            return {"version": version, "at": before}
        if op == "wait_located":
            node, prefix = int(str(cmd["node"])), str(cmd["prefix"])
            count, start = int(str(cmd["count"])), int(str(cmd.get("start", 0)))
            role = _ROLE_NAMES[str(cmd.get("role", "voter"))]
            deadline = time.monotonic() + float(str(cmd["timeout"]))
            while True:
                found = self.located(node, prefix, count, start, role)
                if found == count or time.monotonic() > deadline:
                    return {"found": found, "at": time.time()}
                await asyncio.sleep(_POLL_S)
        if op == "wait_members":
            want = {int(n) for n in cmd["nodes"]}  # type: ignore[attr-defined]
            deadline = time.monotonic() + float(str(cmd["timeout"]))
            while True:
                have = set(self.m.view().node_ids)
                if have == want or time.monotonic() > deadline:
                    return {"members": sorted(have), "at": time.time()}
                await asyncio.sleep(_POLL_S)
        if op == "key":
            action, key = str(cmd["action"]), str(cmd["key"])
            if action == "install":
                await self.m.install_key(key)
            elif action == "use":
                await self.m.use_key(key)
            else:
                await self.m.remove_key(key)
            return self.m.key_ids()
        if op == "block":
            began = time.monotonic()
            time.sleep(float(str(cmd["seconds"])))  # noqa: ASYNC251 - the point: block the loop
            return {"blocked_s": time.monotonic() - began}
        raise ValueError(f"unknown op {op!r}")


async def _serve(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending: set[asyncio.Task[None]] = set()

    async def run(cmd: dict[str, object]) -> None:
        try:
            result = await agent.handle(cmd)
            reply: dict[str, object] = {"rid": cmd.get("rid"), "ok": True, "result": result}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported to the driver, which fails the test
            reply = {"rid": cmd.get("rid"), "ok": False, "error": repr(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        if cmd.get("op") == "quit":
            for task in pending:
                task.cancel()
            return
        task = loop.create_task(run(cmd))
        pending.add(task)
        task.add_done_callback(pending.discard)


async def _main(args: argparse.Namespace) -> None:
    config = MembershipConfig(
        node_id=args.node_id,
        gossip_port=args.port,
        peers_to_contact=tuple(args.peer),
        cluster_name=args.cluster,
        encryption_keys=tuple(args.key),
        preset=args.preset,
        transport_address=f"127.0.0.1:{20000 + args.node_id}",
        data_center=args.data_center,
        rack=args.rack,
        anti_entropy_interval_s=args.anti_entropy_s,
    )
    logging.basicConfig(format="agent %(name)s %(levelname)s %(message)s")  # stderr, as before
    warnings = _WarningRecorder()
    logging.getLogger("copycat.membership").addHandler(warnings)
    membership = Membership(config)
    await membership.start()
    agent = Agent(membership, warnings)
    recorder = asyncio.get_running_loop().create_task(agent.record())
    sys.stdout.write(
        json.dumps(
            {
                "ready": True,
                "node_id": args.node_id,
                "gossip_address": membership.gossip_address,
                "epoch": membership.epoch,
                "pid": os.getpid(),
            }
        )
        + "\n"
    )
    sys.stdout.flush()
    try:
        await _serve(agent)
    finally:
        recorder.cancel()
        await membership.close(leave=args.leave_on_quit)


class AgentProcess:
    """The driver's handle on one agent process (tests and benchmarks): start it, send it
    commands, kill it. `kill()` signals exactly this process, by its pid."""

    def __init__(self, proc: asyncio.subprocess.Process, hello: dict[str, object]) -> None:
        self.proc = proc
        self.hello = hello
        self.node_id = int(str(hello["node_id"]))
        self.gossip_address = str(hello["gossip_address"])
        self.epoch = int(str(hello["epoch"]))
        self._rid = 0
        self._replies: dict[int, asyncio.Future[object]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def spawn(
        cls, *args: str, start_timeout_s: float = 20.0, env: dict[str, str] | None = None
    ) -> AgentProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "copycat.membership._agent",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(start_timeout_s):
                line = await proc.stdout.readline()
            hello = json.loads(line) if line else {}
            if not hello.get("ready"):
                raise RuntimeError(f"agent did not start: {line!r}")
        except BaseException:
            if proc.returncode is None:
                proc.kill()
            async with asyncio.timeout(10):
                await proc.wait()
            raise
        return cls(proc, hello)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            reply = json.loads(line)
            future = self._replies.pop(int(reply["rid"]), None)
            if future is None or future.done():
                continue
            if reply["ok"]:
                future.set_result(reply["result"])
            else:
                future.set_exception(RuntimeError(f"agent {self.node_id}: {reply['error']}"))
        for future in self._replies.values():
            if not future.done():
                future.set_exception(RuntimeError(f"agent {self.node_id} exited"))
        self._replies.clear()

    async def call(self, op: str, *, timeout_s: float = 30.0, **fields: object) -> object:
        """Sends one command and waits (at most `timeout_s`) for its reply."""
        if self.proc.returncode is not None or self.proc.stdin is None:
            raise RuntimeError(f"agent {self.node_id} is not running")
        self._rid += 1
        rid = self._rid
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        self.proc.stdin.write((json.dumps({"op": op, "rid": rid, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout_s):
            return await future

    async def kill(self) -> None:
        """kill -9 of this agent's own pid, then reaps it."""
        if self.proc.returncode is None:
            self.proc.kill()
        async with asyncio.timeout(10):
            await self.proc.wait()
        self._reader.cancel()

    async def quit(self, timeout_s: float = 10.0) -> None:
        """Asks the agent to close and exit; kills it if it does not within `timeout_s`."""
        if self.proc.returncode is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b'{"op": "quit"}\n')
                await self.proc.stdin.drain()
                async with asyncio.timeout(timeout_s):
                    await self.proc.wait()
            except (TimeoutError, ConnectionError):
                pass
        await self.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--key", action="append", default=[])
    parser.add_argument("--cluster", default="copycat-test")
    parser.add_argument("--preset", default="local", choices=("local", "lan", "wan"))
    parser.add_argument("--data-center", default="dc1")
    parser.add_argument("--rack", default="r1")
    parser.add_argument("--anti-entropy-s", type=float, default=10.0)
    parser.add_argument("--leave-on-quit", action="store_true")
    args = parser.parse_args()
    code = 0
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        code = 130
    except BaseException as exc:
        sys.stderr.write(f"agent {args.node_id} failed: {exc!r}\n")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
