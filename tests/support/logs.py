"""The server's log records as a test sees them.

`create_app` configures logging (it replaces the root logger's handlers, pytest's `caplog`
included), so a test collects records with a handler attached after its server started.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class Records(logging.Handler):
    """Every record at `level` or above, kept in order."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{record.name}: {record.getMessage()}" for record in self.records]


@contextmanager
def captured_logs(level: int = logging.INFO) -> Iterator[Records]:
    """Records of the app (root logger) and of uvicorn (which does not propagate)."""
    handler = Records(level)
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
