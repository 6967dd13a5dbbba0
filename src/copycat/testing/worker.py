# A node process driven by JSON lines: the part shared by the node of `copycat demo`
# (`copycat/cli/_worker.py`), the integration tests' node (`tests/integration/node_proc.py`)
# and the benchmark node (`benchmarks/cluster_node.py`).
#
# What lives here: `emit()` (one JSON line on stdout, flushed), `Commands` (read command
# lines from stdin, dispatch each `op` to the handler its program registered, answer a
# failure with one error line, stop on `exit` or at the end of stdin) and `add_node_ops()`
# (the `members` and `allocate` ops, answered as `members` and `allocated` events).
#
# The rules it keeps:
# 1. One command at a time: a handler runs to its end before the next line is read (a
#    handler that must not block the loop starts a task and answers later, or never).
# 2. Every line gets at most one answer from the loop: the handler's, shaped by the
#    program's `reply`, or one error line, shaped by the program's `error`.
# 3. A line that is not a JSON object with a string `op` (answered with op "?"), an op
#    nobody registered, and a handler's `CopyCatError` or `ValueError` are answered
#    with an error line. Any other exception ends `serve()`: it is a bug.
#
# What must not: start or stop a node, parse flags, print anything but command answers,
# or end the process. Each program owns those (see `copycat/cli/_runtime.py`).
"""JSON-lines command loop for node processes (the demo's, the tests' and the
benchmarks' node workers). Internal support, not a stable API."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Final, TextIO, TypeAlias, final

from copycat.errors import CopyCatError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from copycat._node import CopyCat

__all__: Final = [
    "Commands",
    "Handler",
    "add_node_ops",
    "emit",
    "error_event",
]

Handler: TypeAlias = "Callable[[Mapping[str, object]], Awaitable[Mapping[str, object] | None]]"
"""An op's handler: given the command (the decoded line, `op` included), it returns the
fields of its answer, or None to answer nothing now."""


def emit(**event: object) -> None:
    """Write `event` as one JSON line on stdout and flush it."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def error_event(op: str, exc: Exception) -> dict[str, object]:
    """The default error answer: `{"event": "error", "op", "error": <exception type
    name>, "message"}`."""
    return {"event": "error", "op": op, "error": type(exc).__name__, "message": str(exc)}


def _as_is(op: str, answer: Mapping[str, object]) -> Mapping[str, object]:
    del op
    return answer


@final
class Commands:
    """Commands read as JSON lines from stdin, each `{"op": name, ...}`, dispatched to
    the handler registered for `name` (rules in the module header).

    `reply(op, answer)` shapes a handler's answer into the event written (default: the
    answer as is); `error(op, exc)` shapes a failure (default: `error_event`).
    """

    def __init__(
        self,
        *,
        reply: Callable[[str, Mapping[str, object]], Mapping[str, object]] = _as_is,
        error: Callable[[str, Exception], Mapping[str, object]] = error_event,
    ) -> None:
        self._handlers: dict[str, Handler] = {}
        self._reply = reply
        self._error = error
        self._stopping = False

    def op(self, name: str) -> Callable[[Handler], Handler]:
        """A decorator that registers the handler of op `name` (not "exit": that op
        always stops the loop)."""

        def register(handler: Handler) -> Handler:
            self.add(name, handler)
            return handler

        return register

    def add(self, name: str, handler: Handler) -> None:
        """Register `handler` for op `name`; raises ValueError when `name` is "exit" or
        already has one."""
        if name == "exit" or name in self._handlers:
            raise ValueError(f"op {name!r} cannot be registered (exit, or a second handler)")
        self._handlers[name] = handler

    def stop(self) -> None:
        """Stop reading once the running handler has answered (for ops such as `leave`)."""
        self._stopping = True

    async def serve(self, stdin: TextIO | None = None) -> None:
        """Read and answer commands from `stdin` (default: `sys.stdin`) until an `exit`
        op, `stop()`, or the end of the input."""
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin if stdin is None else stdin
        )
        try:
            await self._answer_lines(reader)
        finally:
            transport.close()

    async def _answer_lines(self, reader: asyncio.StreamReader) -> None:
        while not self._stopping:
            line = await reader.readline()
            if not line:
                return
            try:
                op, cmd = _decode(line)
            except ValueError as exc:
                emit(**self._error("?", exc))
                continue
            if op == "exit":
                return
            handler = self._handlers.get(op)
            try:
                if handler is None:
                    raise ValueError(f"unknown op {op!r}")
                answer = await handler(cmd)
            except (CopyCatError, ValueError) as exc:
                emit(**self._error(op, exc))
                continue
            if answer is not None:
                emit(**self._reply(op, answer))


def _decode(line: bytes) -> tuple[str, Mapping[str, object]]:
    cmd: object = json.loads(line)  # JSONDecodeError is a ValueError
    if not isinstance(cmd, dict) or not isinstance(cmd.get("op"), str):
        raise ValueError("a command is a JSON object with an 'op'")
    return str(cmd["op"]), cmd


def add_node_ops(commands: Commands, cc: CopyCat) -> None:
    """Register the ops answered alike by the tests' and the benchmarks' nodes:

    * `{"op": "members"}` -> `{"event": "members", "count"}`;
    * `{"op": "allocate", "replicas": n}` (n optional: the config's default) ->
      `{"event": "allocated", "id"}`.
    """

    @commands.op("members")
    async def members(cmd: Mapping[str, object]) -> Mapping[str, object]:
        del cmd
        return {"event": "members", "count": len(cc.members())}

    @commands.op("allocate")
    async def allocate(cmd: Mapping[str, object]) -> Mapping[str, object]:
        replicas = cmd.get("replicas")
        if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int)):
            raise ValueError("'replicas' must be an integer")
        ds = await cc.allocate_data_structure(replicas=replicas)
        return {"event": "allocated", "id": str(ds)}
