"""stdio MCP servers never outlive the app: not after a clean stop, not after SIGKILL, not
when the configured command is a wrapper (`npx`, `uvx`) whose children are the real server."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.groq_server import FakeGroq
from tests.support.mcp_servers import (
    children_of,
    command_line,
    descendants_of,
    everything_npx,
    everything_stdio,
    group_members,
    is_alive,
    loopback_http,
    time_server,
    write_config,
)
from tests.support.process import ServerProcess, fake_groq_env
from tests.support.waiting import wait_until

_READY_TIMEOUT_S = 20.0

StartApp = Callable[[dict[str, dict[str, Any]]], Awaitable[ServerProcess]]


@pytest.fixture
def start_app(fake_groq: FakeGroq, tmp_path: Path) -> Iterator[StartApp]:
    """Start the app as its own process with these MCP servers, until they are all ready; a
    test that fails before it ended the app does not leave it (or its servers) running."""
    started: list[ServerProcess] = []

    async def start(servers: dict[str, dict[str, Any]]) -> ServerProcess:
        config = write_config(tmp_path / "mcp.json", servers)
        env = fake_groq_env(
            fake_groq.base_url, database_url=f"sqlite:///{tmp_path / 'app.db'}", grace_s=1
        )
        server = ServerProcess(env | {"MCP_CONFIG": config}, tmp_path)
        started.append(server)  # before its start, which may fail after the process began
        server.start()
        url = f"http://127.0.0.1:{server.port}/readyz"

        async def all_ready() -> bool:
            async with loopback_http() as http:
                health = (await http.get(url)).json()["mcp_servers"]
            return all(state["state"] == "ready" for state in health.values())

        await wait_until(all_ready, _READY_TIMEOUT_S, what="the MCP servers ready")
        return server

    yield start
    for server in started:
        server.stop()


async def _start_with_children(start_app: StartApp) -> tuple[ServerProcess, list[int]]:
    server = await start_app({"everything": everything_stdio(), "time": time_server()})
    children = children_of(server.pid)
    commands = " | ".join(command_line(pid) for pid in children)
    assert "server-everything" in commands
    assert "mcp_server_time" in commands
    return server, children


def _groups(children: list[int]) -> list[int]:
    """Every process of the children's process groups: the children, and the launcher's
    watcher of each (docs/tools.md)."""
    return [pid for child in children for pid in group_members(child)]


async def _all_gone(pids: list[int]) -> bool:
    return not any(is_alive(pid) for pid in pids)


def _kill_survivors(pids: list[int]) -> None:
    for pid in pids:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_sigkill_of_the_app_takes_its_stdio_servers_along(start_app: StartApp) -> None:
    server, children = await _start_with_children(start_app)
    everyone = _groups(children)
    assert len(everyone) > len(children)  # each server's watcher is there
    try:
        # Hung servers: they would not even notice their stdin close when the app dies.
        for pid in children:
            os.kill(pid, signal.SIGSTOP)
        server.signal(signal.SIGKILL)
        server.wait(10)
        await wait_until(lambda: _all_gone(everyone), 10, what="the MCP children to die")
    finally:
        _kill_survivors(everyone)


async def test_sigkill_of_the_app_takes_a_wrapped_servers_children_along(
    start_app: StartApp,
) -> None:
    # `npx` runs a shell that runs node: the kernel's PR_SET_PDEATHSIG reaches only `npx`.
    server = await start_app({"everything": everything_npx()})
    [wrapper] = children_of(server.pid)
    tree = descendants_of(server.pid)
    assert any(command_line(pid).startswith("node ") for pid in tree), tree
    everyone = group_members(wrapper)  # the tree, and the launcher's watcher
    try:
        # Hung, all of them: only a signal from outside can end them.
        for pid in tree:
            os.kill(pid, signal.SIGSTOP)
        server.signal(signal.SIGKILL)
        server.wait(10)
        await wait_until(lambda: _all_gone(everyone), 10, what="the wrapped server to die")
    finally:
        _kill_survivors(everyone)


async def test_sigterm_stops_the_stdio_servers_before_the_app_exits(start_app: StartApp) -> None:
    server, children = await _start_with_children(start_app)
    everyone = _groups(children)
    try:
        server.signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert server.wait(20) in (0, -signal.SIGTERM)
        log = server.log.read_text()
        assert "Traceback" not in log, log
        assert await _all_gone(children)
        # Their watchers go with them (at once, but not necessarily before the app exits).
        await wait_until(lambda: _all_gone(everyone), 5, what="the watchers to go")
    finally:
        _kill_survivors(everyone)
