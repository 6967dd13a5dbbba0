# Running one CopyCat node in this process, for `copycat node` and the demo's workers.
#
# What lives here: `serve()` (start the node, keep its status file current, run a body
# until it returns, shut down within a bound) and `exit_process()`, how a process that
# ran a node ends.
#
# The rules it keeps, and why:
# 1. A process that started a node ends through `exit_process()`: logs and streams are
#    flushed, then the interpreter exits normally (its teardown is safe once the node
#    shut down: `KinshipGossip.close()` waits out kinship's threads).
# 2. Shutdown is bounded (`SHUTDOWN_TIMEOUT_S`): a node that cannot leave in time is
#    reported and the process exits non-zero rather than hanging.
# 3. A status file is written every `status_interval_s` and once more, marked
#    "stopped", after a clean shutdown (see `_status.py`).
#
# What must not: parse flags or print to stdout (the demo worker owns its stdout).
"""Run a node in this process: status file, bounded shutdown, a flushed exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

from copycat.cli._status import collect, write_status
from copycat.errors import CopyCatError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from copycat import Config, CopyCat

__all__: Final = ["SHUTDOWN_TIMEOUT_S", "StartError", "exit_now", "exit_process", "serve"]

log = logging.getLogger("copycat.cli")

SHUTDOWN_TIMEOUT_S: Final = 15.0
"""Longest wait for a clean shutdown before the process gives up on it."""


class StartError(Exception):
    """The node could not start (port in use, data dir of another node, ...)."""


async def _keep_status(cc: CopyCat, data_dir: Path, interval_s: float) -> None:
    while True:
        try:
            write_status(data_dir, collect(cc, state="running", interval_s=interval_s))
        except (OSError, CopyCatError) as exc:
            log.warning("cannot write the status file in %s: %s", data_dir, exc)
        await asyncio.sleep(interval_s)


async def serve(
    config: Config,
    body: Callable[[CopyCat], Awaitable[None]],
    *,
    status_interval_s: float = 1.0,
) -> None:
    """Start a node with `config`, run `body(node)` until it returns (or raises), then
    shut the node down. The status file in the data dir is kept current meanwhile.

    Raises `StartError` when the node cannot start, `TimeoutError` when it cannot shut
    down within `SHUTDOWN_TIMEOUT_S`. The caller then ends the process with
    `exit_process()`.
    """
    from copycat import CopyCat

    cc = CopyCat(config)
    try:
        await cc.start()
    except (OSError, CopyCatError) as exc:
        raise StartError(str(exc)) from exc
    data_dir = Path(config.data_dir)
    keeper = asyncio.get_running_loop().create_task(_keep_status(cc, data_dir, status_interval_s))
    try:
        await body(cc)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        final = None
        with contextlib.suppress(CopyCatError):
            final = collect(cc, state="stopped", interval_s=status_interval_s)
        async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
            await cc.shutdown()
        if final is not None:
            try:
                write_status(data_dir, final)
            except OSError as exc:
                log.warning("cannot write the status file in %s: %s", data_dir, exc)


def exit_process(code: int) -> NoReturn:
    """End this process with `code`, after flushing logs and the standard streams."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    raise SystemExit(code)


def exit_now(code: int) -> NoReturn:
    """End this process at once with `code`, with no shutdown and no interpreter
    teardown: for a second signal, when the clean shutdown is what hangs."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
