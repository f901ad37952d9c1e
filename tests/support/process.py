"""Our server as a separate process (`python -m uvicorn app.main:app`), for signal tests.

The process runs the test guards too (`process_guards/sitecustomize.py`), reporting to the test
that started it."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.server import free_port
from tests.support.violations import child_env

REPO_ROOT = Path(__file__).resolve().parents[2]
# Its sitecustomize.py installs the test guards in the server process, before anything else.
_GUARDED_PYTHONPATH = os.pathsep.join(
    [str(Path(__file__).with_name("process_guards")), str(REPO_ROOT)]
)
_START_TIMEOUT_S = 20.0
# What a killed process left (its leases, its claimed jobs) is taken over within a test's waits;
# a test may set its own.
_FAST_TIMERS = {"LEASE_TTL_S": "2", "SUMMARY_POLL_S": "0.25", "SUMMARY_CLAIM_TIMEOUT_S": "2"}


def fake_groq_env(base_url: str, *, database_url: str, grace_s: float) -> dict[str, str]:
    """The settings of a server process on `database_url` answered by the fake Groq at
    `base_url` (summaries and titles by the tests' background summary model)."""
    from tests.conftest import BACKGROUND_SUMMARY_MODEL  # the fixtures' module: import late

    return {
        "DATABASE_URL": database_url,
        "LLM_PROVIDER": "groq",
        "GROQ_API_KEY": "test-key",
        "GROQ_BASE_URL": base_url,
        "GROQ_MODEL": "test-model",
        "SUMMARY_MODEL": BACKGROUND_SUMMARY_MODEL,
        "TITLE_MODEL": BACKGROUND_SUMMARY_MODEL,
        "LLM_MAX_RETRIES": "0",
        "SHUTDOWN_GRACE_S": str(grace_s),
        "LOG_LEVEL": "WARNING",
    }


class ServerProcess:
    """A real server process configured by environment variables, as in production."""

    def __init__(self, env: dict[str, str], workdir: Path, *, serve: bool = False) -> None:
        self.port = free_port()
        # `python -m app.serve` (WORKERS processes on the port) instead of plain uvicorn.
        self._serve = serve
        self._env = {
            # A developer's collector is not the test's: a test that wants traces names its own.
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")},
            **_FAST_TIMERS,
            **env,
            "PYTHONPATH": _GUARDED_PYTHONPATH,
            **child_env(),
        }
        # A separate working directory: a developer's own .env must not leak in.
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"server-{self.port}.log"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        # asyncio's loop, not uvloop: the guards watch asyncio's sockets, callbacks and tasks.
        entry = ["app.serve"] if self._serve else ["uvicorn", "app.main:app"]
        command = [sys.executable, "-m", *entry, "--loop", "asyncio", "--port", str(self.port)]
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self._workdir,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # With workers, a group of its own: `stop` kills the workers with their parent.
                start_new_session=self._serve,
            )
        self._wait_until_healthy()
        return self

    def _wait_until_healthy(self) -> None:
        # Tests call this on their event loop: each poll is a bare connect (tens of µs of CPU)
        # until the port opens, so a slow start on a loaded machine does not add up to a
        # blocked loop; then one health request.
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()}")
            if self._port_open() and self._answers_health():
                return
            time.sleep(0.05)  # polling a condition with a deadline
        raise RuntimeError(f"the server did not start: {self.log.read_text()}")

    def _port_open(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def _answers_health(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

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
        if self._process is None:
            return
        if self._serve:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        elif self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._process.wait(10)
