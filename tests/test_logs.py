"""The node name on log records (`copycat._logs`): bound for a block, restored after it,
and harmless when a coroutine holding the binding is dropped unfinished."""

from __future__ import annotations

import contextvars
import gc
import logging
import types
from typing import TYPE_CHECKING

import pytest

from copycat._logs import NodeLabel, NodeNameFilter, node_name_bound

if TYPE_CHECKING:
    from collections.abc import Generator

pytestmark = pytest.mark.timeout(30)


@types.coroutine
def _suspend() -> Generator[None, None, None]:
    yield  # what a coroutine waiting on the loop looks like from outside


def _name_now() -> str:
    record = logging.LogRecord("copycat", logging.INFO, __file__, 1, "x", None, None)
    NodeNameFilter().filter(record)
    return str(record.copycat_node)


def test_a_block_names_its_records_and_restores_the_caller_s_name() -> None:
    assert _name_now() == "-"
    with node_name_bound(NodeLabel("eu-1")):
        assert _name_now() == "eu-1"
        with node_name_bound(NodeLabel("eu-2")):
            assert _name_now() == "eu-2"
        assert _name_now() == "eu-1"
    assert _name_now() == "-"


def test_a_coroutine_dropped_inside_the_block_closes_without_an_error() -> None:
    """The simulator drops unfinished coroutines of stopped nodes; closing one runs the
    block's exit in another context, where the token cannot be reset."""

    async def waits_forever() -> None:
        with node_name_bound(NodeLabel("eu-1")):
            await _suspend()

    coro = waits_forever()
    contextvars.copy_context().run(coro.send, None)  # enter the block in one context
    coro.close()  # and close it from another: no ValueError
    gc.collect()
