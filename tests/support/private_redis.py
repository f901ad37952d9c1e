"""Redis for the message bus tests: the machine's shared server (`TEST_REDIS_URL`, else
127.0.0.1:6379, started by scripts/test-services.sh), or a private `redis-server` of the test's
own on a free port, for the tests that stop and start it (never the shared one)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.guard_plugin import NO_SKIPS
from tests.support.server import free_port

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
_START_TIMEOUT_S = 10.0


def _unavailable(reason: str) -> None:
    if NO_SKIPS:
        pytest.fail(f"CI must run the message bus tests: {reason}")
    pytest.skip(reason)


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)) != 0:
            return False
        probe.sendall(b"PING\r\n")
        return probe.recv(16).startswith(b"+PONG")


def shared_redis_url() -> str:
    """The shared Redis, checked to answer (scripts/test-services.sh starts it)."""
    url = os.environ.get("TEST_REDIS_URL", SHARED_REDIS_URL)
    if url == SHARED_REDIS_URL and not _answers(6379):
        _unavailable("no Redis at 127.0.0.1:6379: run scripts/test-services.sh")
    return url


class PrivateRedis:
    """A `redis-server` of one test, without persistence: `stop()` loses everything in it."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _unavailable("redis-server is not installed: apt-get install redis-server")
        assert binary is not None
        self._binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._folder = Path(tempfile.mkdtemp(prefix="private-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self._binary, "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self._folder)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _answers(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.02)  # polling a condition with a deadline

    def stop(self) -> None:
        """Kill it (as a crash would): clients see their connections cut."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
        self._process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self._folder, ignore_errors=True)


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    """A running private Redis for the duration of the block."""
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            server.remove()
