"""A store that takes no write for a while: an SQLite file locked by another connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.server import RunningServer


@contextmanager
def stalled(server: RunningServer) -> Iterator[None]:
    """The server's SQLite store takes no write while the block runs (reads still work)."""
    lock = sqlite3.connect(server.settings.sqlite_path(), timeout=5, isolation_level=None)
    lock.execute("begin exclusive")
    try:
        yield
    finally:
        lock.execute("rollback")
        lock.close()
