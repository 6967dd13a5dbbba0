# Log lines a program gets when it configured no logging of its own.
#
# What lives here: `install_default_handler`, which gives the "copycat" logger a handler
# with time, level, node name and logger name (or one JSON object per line) when nothing
# in the program handles log records; `JsonFormatter`; and the node name each record
# carries (`NodeNameFilter`, `bind_node_name`). A leaf: it imports no layer.
#
# The node name rides in a context variable, set in the context a node's tasks start in,
# so every record logged by a node's tasks names that node even with many nodes in one
# process. The variable holds a mutable label: the name is filled in once the node knows
# its address, after its first tasks started. Setting the variable around a node's own
# calls, rather than running them in new tasks, leaves the event loop's schedule as it was
# (the simulator's recorded seeds depend on it).
#
# What must not: touch a logger or handler the program configured. The handler stands
# down by itself the moment the program gives the root logger a handler (after a node
# started), so no line is ever printed twice.
"""Default log output of CopyCat: timestamped text, or JSON lines."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__: Final = [
    "TEXT_FORMAT",
    "JsonFormatter",
    "LogFormat",
    "NodeLabel",
    "NodeNameFilter",
    "install_default_handler",
    "node_name_bound",
    "stderr_handler",
]

LogFormat = Literal["text", "json"]

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s [%(copycat_node)s] %(name)s: %(message)s"

NO_NODE: Final = "-"
"""`copycat_node` of a record logged outside any node's tasks."""


class NodeLabel:
    """The name a node's log records carry; filled in when the node knows it."""

    __slots__ = ("name",)

    def __init__(self, name: str = NO_NODE) -> None:
        self.name = name


_NODE: Final[contextvars.ContextVar[NodeLabel | None]] = contextvars.ContextVar(
    "copycat_node", default=None
)


@contextlib.contextmanager
def node_name_bound(label: NodeLabel) -> Iterator[None]:
    """Within the block, records of this task, and of every task it starts, name
    `label`; the caller's context is restored after it."""
    token = _NODE.set(label)
    try:
        yield
    finally:
        # A coroutine dropped unfinished is closed from whatever context collects it,
        # where the token does not belong: nothing to restore there.
        with contextlib.suppress(ValueError):
            _NODE.reset(token)


class NodeNameFilter(logging.Filter):
    """Sets `record.copycat_node` to the name of the node whose task logged it ("-"
    outside any node). Add it to a handler of your own to use `%(copycat_node)s` in its
    format; CopyCat's default handler has it."""

    def filter(self, record: logging.LogRecord) -> bool:
        label = _NODE.get()
        record.copycat_node = NO_NODE if label is None else label.name
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: `time` (ISO 8601, UTC), `level`, `node` (see
    `NodeNameFilter`), `logger`, `message`, and `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "node": getattr(record, "copycat_node", NO_NODE),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)

    converter = staticmethod(time.gmtime)


def stderr_handler(log_format: LogFormat = "text") -> logging.Handler:
    """A stderr handler in CopyCat's format (text or JSON lines), each record naming its
    node (`NodeNameFilter`): what `copycat node` logs through."""
    handler = logging.StreamHandler(sys.stderr)
    _dress(handler, log_format)
    return handler


def _dress(handler: logging.Handler, log_format: LogFormat) -> None:
    handler.addFilter(NodeNameFilter())
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )


class _DefaultHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to stderr while the root logger has no handler of the program's."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return  # the program configured logging since: its handlers print this
        super().emit(record)


def install_default_handler(log_format: LogFormat = "text") -> bool:
    """Give the "copycat" logger a stderr handler (info and above) when the program
    configured no logging: no handler on the root logger nor on "copycat". Returns
    whether it installed one; called again, it changes nothing."""
    logger = logging.getLogger("copycat")
    if logging.getLogger().handlers or logger.handlers:
        return False
    handler = _DefaultHandler(sys.stderr)
    _dress(handler, log_format)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return True
