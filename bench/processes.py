"""Starting and stopping the benchmark's processes: the upstream, a server, the load client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 15.0
_LOAD_TIMEOUT_S = 240.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    """The fake upstream, and its base URL once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks until the upstream printed its port (or died)
    if not line.startswith("listening "):
        stop(process)
        raise RuntimeError("the fake upstream did not start")
    return process, f"http://127.0.0.1:{line.split()[1]}"


class Server:
    """One server under test: uvicorn serving `bench.launcher:create_target` in its own process."""

    def __init__(self, *, flags: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        command = [
            sys.executable, "-m", "uvicorn", "bench.launcher:create_target", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *flags,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env})
        self._wait_ready()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def lag_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/__bench/lag"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.lag_url, timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)  # polling a port that is not open yet; bounded by the deadline
        stop(self.process)
        raise RuntimeError("the server did not start in time")

    def stop(self) -> None:
        stop(self.process)


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_load(options: list[str]) -> dict[str, Any]:
    """Run the load client to its end; its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=_LOAD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` until `stop_profiler`; collapsed stacks are written to `output`."""
    py_spy = Path(sys.executable).parent / "py-spy"
    command = [
        str(py_spy), "record", "--pid", str(pid), "--rate", "250",
        "--format", "raw", "--output", str(output), "--nonblocking",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as py-spy expects: it writes its output and exits."""
    profiler.send_signal(signal.SIGINT)
    profiler.wait(_STOP_TIMEOUT_S)
