"""A PostgreSQL server of the test's own, in a temporary folder on a free port.

Outage tests stop and start their database; doing that to the machine's shared server would cut
every other test's connections. This one is made with Debian's `initdb` and run with `pg_ctl` as
the `postgres` user (PostgreSQL refuses to run as root). Without those (a developer machine
without root), the tests that need it skip locally and fail in CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.guard_plugin import NO_SKIPS
from tests.support.server import free_port

_BIN_ROOT = Path("/usr/lib/postgresql")
_START_TIMEOUT_S = 30


def _binaries() -> Path | None:
    versions = sorted(_BIN_ROOT.glob("*/bin/initdb")) if _BIN_ROOT.exists() else []
    return versions[-1].parent if versions else None


def _unavailable(reason: str) -> None:
    if NO_SKIPS:
        pytest.fail(f"CI must run the private PostgreSQL tests: {reason}")
    pytest.skip(reason)


class PrivatePostgres:
    """One throwaway cluster: `dsn` to connect, `stop()` and `start()` to make an outage."""

    def __init__(self) -> None:
        binaries = _binaries()
        if binaries is None or shutil.which("runuser") is None or os.geteuid() != 0:
            _unavailable("a private PostgreSQL needs Debian's postgresql binaries, runuser, root")
        assert binaries is not None
        self._bin = binaries
        # Not under pytest's tmp_path: the `postgres` user must be able to reach the folder.
        self.folder = Path(tempfile.mkdtemp(prefix="private-postgres-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self._data = self.folder / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(
            "initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    def _as_postgres(self, program: str, *arguments: str) -> None:
        command = ["runuser", "-u", "postgres", "--", str(self._bin / program), *arguments]
        subprocess.run(command, check=True, capture_output=True, timeout=_START_TIMEOUT_S)

    def start(self) -> None:
        options = f"-p {self.port} -k {self._data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self._data / "server.log")
        self._as_postgres("pg_ctl", "-D", str(self._data), "-o", options, "-l", log, "-w", "start")

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server: `fast` cuts open connections, `immediate` is a crash."""
        self._as_postgres("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private server for the duration of the block; removed afterwards."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop(mode="immediate")  # already stopped by the test, perhaps
        shutil.rmtree(server.folder, ignore_errors=True)
