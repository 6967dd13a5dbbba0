# Log lines a program gets when it configured no logging of its own.
#
# What lives here: `install_default_handler`, which gives the "copycat" logger a handler
# with time, level and logger name (or one JSON object per line) when nothing in the
# program handles log records, and `JsonFormatter`. A leaf: it imports no layer.
#
# What must not: touch a logger or handler the program configured. The handler stands
# down by itself the moment the program gives the root logger a handler (after a node
# started), so no line is ever printed twice.
"""Default log output of CopyCat: timestamped text, or JSON lines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Final, Literal

__all__: Final = ["TEXT_FORMAT", "JsonFormatter", "LogFormat", "install_default_handler"]

LogFormat = Literal["text", "json"]

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: `time` (ISO 8601, UTC), `level`, `logger`,
    `message`, and `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)

    converter = staticmethod(time.gmtime)


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
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return True
