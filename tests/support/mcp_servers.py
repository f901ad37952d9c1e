"""The reference MCP servers the tests use, none written here: `mcp-server-time` (PyPI, stdio)
and `@modelcontextprotocol/server-everything` (npm, stdio and streamable HTTP), installed by
`make test` (requirements-dev.txt; `npm ci` in tests/mcp/servers)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
NPM_SERVERS = REPO_ROOT / "tests/mcp/servers"
EVERYTHING_JS = NPM_SERVERS / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
_START_TIMEOUT_S = 15.0


def time_server(**options: Any) -> dict[str, Any]:
    """`mcp-server-time` over stdio, as a team would configure it."""
    return {"command": sys.executable, "args": ["-m", "mcp_server_time"], **options}


def _require_everything() -> None:
    if not EVERYTHING_JS.exists():
        raise RuntimeError(
            "the everything MCP server is not installed: run scripts/test-services.sh "
            "(or `npm ci` in tests/mcp/servers)"
        )


def everything_stdio(**options: Any) -> dict[str, Any]:
    """The everything server over stdio."""
    _require_everything()
    return {"command": "node", "args": [str(EVERYTHING_JS), "stdio"], **options}


def everything_npx(**options: Any) -> dict[str, Any]:
    """The everything server behind `npx`, as teams often configure servers: the server is a
    grandchild of the app (npm exec, then a shell, then node), not its child."""
    _require_everything()
    return {
        "command": "npx",
        "args": ["--no-install", "mcp-server-everything", "stdio"],
        "cwd": str(NPM_SERVERS),  # its node_modules has the server's bin
        **options,
    }


def write_config(path: Path, servers: dict[str, dict[str, Any]]) -> str:
    """An `MCP_CONFIG` file of these servers; its path."""
    path.write_text(json.dumps({"mcpServers": servers}))
    return str(path)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def descendants_of(pid: int) -> list[int]:
    """The children of `pid`, their children, and so on."""
    found = []
    for child in children_of(pid):
        found += [child, *descendants_of(child)]
    return found


def group_members(pgid: int) -> list[int]:
    """The live processes of the process group `pgid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def is_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextmanager
def everything_http() -> Iterator[str]:
    """The everything server in streamable-HTTP mode on a free loopback port; its MCP URL."""
    port = free_port()
    with everything_http_on(port):
        yield f"http://127.0.0.1:{port}/mcp"


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the everything server exited at start")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling a condition with a deadline
    raise RuntimeError("the everything server did not listen")


def probe_server(**options: Any) -> dict[str, Any]:
    """The tests' own small server (`mcp_probe_server.py`): `_meta` and a changing tool list."""
    script = Path(__file__).with_name("mcp_probe_server.py")
    return {"command": sys.executable, "args": [str(script)], **options}


@contextmanager
def everything_http_on(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """The everything server in streamable-HTTP mode on `port`; its process."""
    _require_everything()
    process = subprocess.Popen(
        ["node", str(EVERYTHING_JS), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        yield process
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)


def loopback_http(base_url: str = "") -> httpx.AsyncClient:
    """An HTTP client for our server on loopback: plain HTTP, so no TLS context (building one
    loads the CA bundle, about 100 ms of CPU on the test's event loop, which the guards catch)."""
    return httpx.AsyncClient(base_url=base_url, trust_env=False, verify=False)
