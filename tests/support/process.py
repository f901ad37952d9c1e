"""Our server as a separate process (`python -m uvicorn app.main:app`), for signal tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT_S = 20.0
# What a killed process left (its leases, its claimed jobs) is taken over within a test's waits;
# a test may set its own.
_FAST_TIMERS = {"LEASE_TTL_S": "2", "SUMMARY_POLL_S": "0.25", "SUMMARY_CLAIM_TIMEOUT_S": "2"}


class ServerProcess:
    """A real server process configured by environment variables, as in production."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self._env = {**os.environ, **_FAST_TIMERS, **env, "PYTHONPATH": str(REPO_ROOT)}
        # A separate working directory: a developer's own .env must not leak in.
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"server-{self.port}.log"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> ServerProcess:
        command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(self.port)]
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                command, cwd=self._workdir, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_healthy()
        return self

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).is_success:
                    return
            except httpx.TransportError:
                time.sleep(0.05)  # polling a condition with a deadline
        raise RuntimeError(f"the server did not start: {self.log.read_text()}")

    def rss_mib(self) -> float:
        """The server process's resident memory."""
        assert self._process is not None
        with open(f"/proc/{self._process.pid}/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def signal(self, number: int) -> None:
        assert self._process is not None
        self._process.send_signal(number)

    def wait(self, timeout: float = 20.0) -> int:
        assert self._process is not None
        return self._process.wait(timeout)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
