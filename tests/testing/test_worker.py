# The command loop shared by the node processes (copycat.testing.worker), driven in
# process through a pipe: dispatch, the answers' shapes, errors, and the ways it stops.
# No node starts here (the processes run in tests/cli and tests/integration).
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest

from copycat.errors import NotEnoughNodesError
from copycat.testing.worker import Commands

if TYPE_CHECKING:
    from collections.abc import Mapping


async def serve(
    commands: Commands, lines: list[str], capsys: pytest.CaptureFixture[str]
) -> list[dict[str, object]]:
    """Run `commands` over `lines` (then the end of input); the JSON lines it wrote."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as w:
        w.write("".join(line + "\n" for line in lines))
    with os.fdopen(read_fd) as r:
        await commands.serve(r)
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def echo_commands(**shape: object) -> Commands:
    commands = Commands(**shape)  # type: ignore[arg-type]

    @commands.op("echo")
    async def echo(cmd: Mapping[str, object]) -> Mapping[str, object]:
        return {"event": "echoed", "value": cmd.get("value")}

    @commands.op("quiet")
    async def quiet(cmd: Mapping[str, object]) -> None:
        del cmd

    @commands.op("refuse")
    async def refuse(cmd: Mapping[str, object]) -> Mapping[str, object]:
        del cmd
        raise NotEnoughNodesError(asked=3, available=1)

    @commands.op("leave")
    async def leave(cmd: Mapping[str, object]) -> Mapping[str, object]:
        del cmd
        commands.stop()
        return {"event": "left"}

    return commands


@pytest.mark.asyncio
async def test_each_op_goes_to_its_handler_and_answers_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = await serve(
        echo_commands(), ['{"op": "echo", "value": 1}', '{"op": "quiet"}', '{"op": "echo"}'], capsys
    )
    assert out == [{"event": "echoed", "value": 1}, {"event": "echoed", "value": None}]


@pytest.mark.asyncio
async def test_failures_are_answered_with_one_error_line_and_the_loop_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = await serve(
        echo_commands(),
        ["not json", "[1]", '{"op": 7}', '{"op": "nope"}', '{"op": "refuse"}', '{"op": "echo"}'],
        capsys,
    )
    assert [(e["event"], e["op"], e["error"]) for e in out[:-1]] == [
        ("error", "?", "JSONDecodeError"),
        ("error", "?", "ValueError"),
        ("error", "?", "ValueError"),
        ("error", "nope", "ValueError"),
        ("error", "refuse", "NotEnoughNodesError"),
    ]
    assert out[-1] == {"event": "echoed", "value": None}


@pytest.mark.asyncio
async def test_a_program_shapes_its_answers_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    commands = echo_commands(
        reply=lambda op, answer: {"event": "reply", "op": op, **answer},
        error=lambda op, exc: {"event": "error", "op": op, "message": type(exc).__name__},
    )

    @commands.op("get")
    async def get(cmd: Mapping[str, object]) -> Mapping[str, object]:
        return {"value": cmd.get("value")}

    out = await serve(commands, ['{"op": "get", "value": 2}', '{"op": "refuse"}'], capsys)
    assert out == [
        {"event": "reply", "op": "get", "value": 2},
        {"event": "error", "op": "refuse", "message": "NotEnoughNodesError"},
    ]


@pytest.mark.asyncio
async def test_exit_and_stop_end_the_loop_before_the_next_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await serve(echo_commands(), ['{"op": "exit"}', '{"op": "echo"}'], capsys) == []
    out = await serve(echo_commands(), ['{"op": "leave"}', '{"op": "echo"}'], capsys)
    assert out == [{"event": "left"}]


def test_exit_and_a_second_handler_cannot_be_registered() -> None:
    commands = echo_commands()

    async def handler(cmd: Mapping[str, object]) -> None:
        del cmd

    for name in ("exit", "echo"):
        with pytest.raises(ValueError, match=repr(name)):
            commands.add(name, handler)
