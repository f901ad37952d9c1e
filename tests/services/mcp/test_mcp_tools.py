"""MCP tools end to end: the model (the Groq fake) asks for tools of real reference servers
(`mcp-server-time`, `server-everything`), through the WebSocket, and every call is stored."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.support.client import Frame
from tests.support.mcp_servers import (
    children_of,
    command_line,
    everything_http,
    everything_http_on,
    everything_stdio,
    group_members,
    is_alive,
    loopback_http,
    time_server,
    write_config,
)
from tests.support.server import RunningServer, free_port
from tests.support.waiting import wait_until

# A server's start (Node, or a Python interpreter importing the SDK) on a loaded machine.
_READY_TIMEOUT_S = 20.0


async def _mcp_health(server: RunningServer) -> dict[str, Any]:
    async with loopback_http(server.http_url) as http:
        response = await http.get("/readyz")
    health: dict[str, Any] = response.json()["mcp_servers"]
    return health


async def wait_ready(server: RunningServer, *names: str, restarts: int = 0) -> dict[str, Any]:
    """Until each named server is ready (after at least `restarts` restarts)."""
    health: dict[str, Any] = {}

    async def ready() -> bool:
        nonlocal health
        health = await _mcp_health(server)
        return all(
            health[name]["state"] == "ready" and health[name]["restarts"] >= restarts
            for name in names
        )

    await wait_until(ready, _READY_TIMEOUT_S, what=f"MCP servers {names} ready")
    return health


def _by_name(frames: list[Frame], kind: str) -> dict[str, Frame]:
    return {str(frame["name"]): frame for frame in frames if frame["type"] == kind}


@pytest.fixture
def start_with_mcp(start_server: StartServer, tmp_path: Path) -> Any:
    def start(servers: dict[str, dict[str, Any]], **overrides: Any) -> RunningServer:
        config = write_config(tmp_path / "mcp.json", servers)
        return start_server(mcp_config=config, **overrides)

    return start


@pytest.fixture
async def http_everything() -> AsyncIterator[str]:
    with everything_http() as url:
        yield url


async def test_the_model_calls_tools_of_stdio_and_http_servers(
    start_with_mcp: Any, fake_groq: FakeGroq, http_everything: str
) -> None:
    server = start_with_mcp(
        {"time": time_server(), "everything": everything_stdio(), "web": {"url": http_everything}}
    )
    await wait_ready(server, "time", "everything", "web")
    fake_groq.script(
        tool_call_reply(
            ("time__get_current_time", {"timezone": "Europe/Paris"}),
            ("everything__get-sum", {"a": 2, "b": 3}),
            ("web__echo", {"message": "over HTTP"}),
            ("everything__get-structured-content", {"location": "Chicago"}),
            ("everything__get-tiny-image", {}),
            ("everything__get-resource-reference", {"resourceType": "Blob", "resourceId": 2}),
            ("everything__get-resource-links", {"count": 1}),
        ),
        text_reply("done"),
    )
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("use the tools")
    assert frames[-1]["status"] == "completed"
    calls, results = _by_name(frames, "tool.call"), _by_name(frames, "tool.result")
    assert calls["time__get_current_time"]["server"] == "time"
    assert calls["web__echo"]["server"] == "web"
    assert all(result["ok"] for result in results.values()), results
    # Structured content is the JSON result; text content the string result.
    assert results["time__get_current_time"]["result"]["timezone"] == "Europe/Paris"
    assert results["everything__get-sum"]["result"] == "The sum of 2 and 3 is 5."
    assert results["web__echo"]["result"] == "Echo: over HTTP"
    assert set(results["everything__get-structured-content"]["result"]) == {
        "temperature",
        "conditions",
        "humidity",
    }
    # The image is a note for the text model, not its bytes.
    image = results["everything__get-tiny-image"]["result"]
    assert "[image not shown: image/png" in image
    assert "iVBOR" not in image
    blob = results["everything__get-resource-reference"]["result"]
    assert "[binary resource not shown: demo://resource/dynamic/blob/2" in blob
    assert "[resource link: demo://" in results["everything__get-resource-links"]["result"]
    # The model heard each result, and every call and result is stored like a built-in one.
    tool_messages = [m for m in fake_groq.requests[1].body["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 7
    stored = await _stored_events(server, _session_id(client))
    assert [e["type"] for e in stored].count("tool.call") == 7
    assert (
        next(e for e in stored if e["type"] == "tool.call" and e["name"] == "web__echo")["server"]
        == "web"
    )


def _session_id(client: Any) -> str:
    ready = client.received[0]
    assert ready["type"] == "session.ready"
    return str(ready["session_id"])


async def _stored_events(server: RunningServer, session_id: str) -> list[dict[str, Any]]:
    async with loopback_http(server.http_url) as http:
        response = await http.get(f"/api/sessions/{session_id}/events")
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def test_tool_errors_reach_the_model(start_with_mcp: Any, fake_groq: FakeGroq) -> None:
    server = start_with_mcp({"time": time_server()})
    await wait_ready(server, "time")
    fake_groq.script(
        tool_call_reply(
            ("time__get_current_time", {"timezone": "Nowhere/Atlantis"}),  # isError from it
            ("time__convert_time", {"time": "10:00"}),  # arguments its schema refuses
        ),
        text_reply("sorry"),
    )
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("what time is it in Atlantis?")
    results = _by_name(frames, "tool.result")
    assert results["time__get_current_time"]["ok"] is False
    assert "Nowhere/Atlantis" in results["time__get_current_time"]["error"]
    assert results["time__convert_time"]["ok"] is False
    assert "invalid arguments" in results["time__convert_time"]["error"]
    tool_messages = [m for m in fake_groq.requests[1].body["messages"] if m["role"] == "tool"]
    assert any("Nowhere/Atlantis" in m["content"] for m in tool_messages)
    assert frames[-1]["status"] == "completed"


async def test_a_slow_tool_times_out_and_the_server_stays(
    start_with_mcp: Any, fake_groq: FakeGroq
) -> None:
    server = start_with_mcp({"everything": everything_stdio(timeout=1)})
    await wait_ready(server, "everything")
    fake_groq.script(
        tool_call_reply(("everything__trigger-long-running-operation", {"duration": 30})),
        tool_call_reply(("everything__echo", {"message": "still here"})),
        text_reply("ok"),
    )
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("run the slow one")
    results = [frame for frame in frames if frame["type"] == "tool.result"]
    assert results[0]["ok"] is False
    assert results[0]["error"] == "timed out after 1 s"
    # Slow is not hung: the server answered the check that followed and still serves.
    assert results[1] == results[1] | {"ok": True, "result": "Echo: still here"}
    health = await _mcp_health(server)
    assert health["everything"]["state"] == "ready"
    assert health["everything"]["restarts"] == 0


def _everything_children() -> list[int]:
    """The live stdio everything servers this process (its server threads) started."""
    return [
        pid
        for pid in children_of(os.getpid())
        if is_alive(pid) and command_line(pid).endswith("server-everything/dist/index.js stdio ")
    ]


async def test_a_server_killed_mid_call_is_an_error_then_restarted(
    start_with_mcp: Any, fake_groq: FakeGroq
) -> None:
    server = start_with_mcp({"everything": everything_stdio(timeout=10)})
    await wait_ready(server, "everything")
    [child] = _everything_children()
    fake_groq.script(
        tool_call_reply(("everything__trigger-long-running-operation", {"duration": 30})),
        text_reply("it broke"),
    )
    async with server.connect() as client:
        await client.ready()
        await client.send({"type": "user.message", "text": "run the slow one"})
        await client.recv_until("tool.call")
        os.kill(child, signal.SIGKILL)
        frames = await client.recv_until("response.done")
    [result] = [frame for frame in frames if frame["type"] == "tool.result"]
    assert result["ok"] is False
    # Mid-call as a rule; on a loaded machine the kill may land before the request went out,
    # and the model then hears that the server is not available: an error either way.
    assert result["error"].startswith("MCP server 'everything'")
    assert frames[-1]["status"] == "completed"

    health = await wait_ready(server, "everything", restarts=1)
    assert _everything_children() != [child]
    async with loopback_http(server.http_url) as http:
        metrics = (await http.get("/metrics")).text
    restarts = health["everything"]["restarts"]
    assert f'chat_mcp_server_restarts{{server="everything"}} {restarts:.1f}' in metrics
    assert 'chat_mcp_server_up{server="everything"} 1.0' in metrics
    fake_groq.script(tool_call_reply(("everything__get-sum", {"a": 1, "b": 1})), text_reply("2"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("add")
    assert _by_name(frames, "tool.result")["everything__get-sum"]["ok"] is True
    assert not is_alive(child)

    async def group_gone() -> bool:
        return not group_members(child)

    # The launcher's watcher of the killed server went with it (docs/tools.md).
    await wait_until(group_gone, 5, what="the killed server's process group to end")


async def test_a_server_that_fails_at_start_does_not_stop_the_app(
    start_with_mcp: Any, fake_groq: FakeGroq
) -> None:
    server = start_with_mcp(
        {"broken": {"command": "no-such-mcp-server-binary"}, "time": time_server()}
    )
    health = await wait_ready(server, "time")
    assert health["broken"]["state"] == "degraded"
    assert "no-such-mcp-server-binary" in health["broken"]["last_error"]
    async with loopback_http(server.http_url) as http:
        ready = await http.get("/readyz")
        metrics = (await http.get("/metrics")).text
    assert ready.status_code == 200  # the store decides readiness; the details tell the rest
    assert 'chat_mcp_server_up{server="broken"} 0.0' in metrics
    assert 'chat_mcp_server_up{server="time"} 1.0' in metrics
    # Its tools are absent: the model is offered the time server's only.
    fake_groq.script(text_reply("hello"))
    async with server.connect() as client:
        await client.ready()
        await client.ask("hi")
    offered = [tool["function"]["name"] for tool in fake_groq.requests[0].body["tools"]]
    assert "time__get_current_time" in offered
    assert not any(name.startswith("broken__") for name in offered)


async def test_calls_are_counted_per_server_and_tool(
    start_with_mcp: Any, fake_groq: FakeGroq
) -> None:
    server = start_with_mcp({"time": time_server()})
    await wait_ready(server, "time")
    fake_groq.script(
        tool_call_reply(
            ("time__get_current_time", {"timezone": "UTC"}),
            ("time__get_current_time", {"timezone": "Nowhere/X"}),
        ),
        text_reply("ok"),
    )
    async with server.connect() as client:
        await client.ready()
        await client.ask("time?")
    async with loopback_http(server.http_url) as http:
        metrics = (await http.get("/metrics")).text
    labels = 'server="time",tool="get_current_time"'  # the client sorts them after `outcome`
    assert f'chat_mcp_tool_call_seconds_count{{outcome="ok",{labels}}} 1.0' in metrics
    assert f'chat_mcp_tool_call_seconds_count{{outcome="error",{labels}}} 1.0' in metrics


async def test_a_hung_server_times_out_then_is_restarted(
    start_with_mcp: Any, fake_groq: FakeGroq
) -> None:
    server = start_with_mcp({"everything": everything_stdio(timeout=1)})
    await wait_ready(server, "everything")
    [child] = _everything_children()
    os.kill(child, signal.SIGSTOP)  # alive, but answers nothing
    try:
        fake_groq.script(
            tool_call_reply(("everything__echo", {"message": "anyone?"})), text_reply("no")
        )
        async with server.connect() as client:
            await client.ready()
            frames = await client.ask("echo")
        [result] = [frame for frame in frames if frame["type"] == "tool.result"]
        assert result["ok"] is False
        assert result["error"] == "timed out after 1 s"
        # A stopped process cannot close its pipes: only the check after the timeout, which it
        # does not answer either, can find it hung; it is killed and started anew.
        await wait_ready(server, "everything", restarts=1)
        assert not is_alive(child)
    finally:
        if is_alive(child):
            os.kill(child, signal.SIGKILL)


async def test_an_http_server_that_goes_away_is_an_error_then_reached_again(
    start_with_mcp: Any, fake_groq: FakeGroq
) -> None:
    port = free_port()
    with everything_http_on(port):
        server = start_with_mcp({"web": {"url": f"http://127.0.0.1:{port}/mcp", "timeout": 2}})
        await wait_ready(server, "web")
    # Gone: a call fails and tells the model; the server shows degraded meanwhile.
    fake_groq.script(tool_call_reply(("web__echo", {"message": "hello?"})), text_reply("down"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("echo")
    [result] = [frame for frame in frames if frame["type"] == "tool.result"]
    assert result["ok"] is False
    assert "MCP server 'web'" in result["error"]

    async def degraded() -> bool:
        return bool((await _mcp_health(server))["web"]["state"] == "degraded")

    await wait_until(degraded, 10, what="the HTTP server shown degraded")
    with everything_http_on(port):
        await wait_ready(server, "web", restarts=1)
        fake_groq.script(tool_call_reply(("web__echo", {"message": "back"})), text_reply("up"))
        async with server.connect() as client:
            await client.ready()
            frames = await client.ask("echo")
    assert _by_name(frames, "tool.result")["web__echo"]["result"] == "Echo: back"
