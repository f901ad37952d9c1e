"""stdio MCP servers never outlive the app: not after a clean stop, not after SIGKILL."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.fakes.groq_server import FakeGroq
from tests.support.mcp_servers import (
    children_of,
    command_line,
    everything_stdio,
    is_alive,
    loopback_http,
    time_server,
    write_config,
)
from tests.support.process import ServerProcess, fake_groq_env
from tests.support.waiting import wait_until

_READY_TIMEOUT_S = 20.0


async def _start_with_children(
    fake_groq: FakeGroq, tmp_path: Path
) -> tuple[ServerProcess, list[int]]:
    config = write_config(
        tmp_path / "mcp.json", {"everything": everything_stdio(), "time": time_server()}
    )
    env = fake_groq_env(
        fake_groq.base_url, database_url=f"sqlite:///{tmp_path / 'app.db'}", grace_s=1
    )
    server = ServerProcess(env | {"MCP_CONFIG": config}, tmp_path).start()
    url = f"http://127.0.0.1:{server.port}/readyz"

    async def both_ready() -> bool:
        async with loopback_http() as http:
            health = (await http.get(url)).json()["mcp_servers"]
        return all(state["state"] == "ready" for state in health.values())

    await wait_until(both_ready, _READY_TIMEOUT_S, what="both MCP servers ready")
    children = children_of(server.pid)
    commands = " | ".join(command_line(pid) for pid in children)
    assert "server-everything" in commands
    assert "mcp_server_time" in commands
    return server, children


async def _all_gone(pids: list[int]) -> bool:
    return not any(is_alive(pid) for pid in pids)


async def test_sigkill_of_the_app_takes_its_stdio_servers_along(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    server, children = await _start_with_children(fake_groq, tmp_path)
    # Hung servers: they would not even notice their stdin close when the app dies.
    for pid in children:
        os.kill(pid, signal.SIGSTOP)
    try:
        server.signal(signal.SIGKILL)
        server.wait(10)
        await wait_until(lambda: _all_gone(children), 10, what="the MCP children to die")
    finally:
        for pid in children:
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_sigterm_stops_the_stdio_servers_before_the_app_exits(
    fake_groq: FakeGroq, tmp_path: Path
) -> None:
    server, children = await _start_with_children(fake_groq, tmp_path)
    server.signal(signal.SIGTERM)
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert server.wait(20) in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert "Traceback" not in log, log
    assert await _all_gone(children)
