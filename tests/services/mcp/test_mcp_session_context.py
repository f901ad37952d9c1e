"""What an MCP server learns of the caller (`_meta`), and tool lists that change at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.services.mcp.test_mcp_tools import wait_ready
from tests.support.mcp_servers import everything_stdio, probe_server, write_config
from tests.support.waiting import wait_until


def _result(frames: list[dict[str, Any]], name: str) -> Any:
    [result] = [f for f in frames if f["type"] == "tool.result" and f["name"] == name]
    assert result["ok"] is True, result
    return result["result"]


async def test_calls_carry_the_session_and_owner_but_not_credentials_unless_asked(
    start_server: StartServer, fake_groq: FakeGroq, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "mcp.json",
        {"plain": probe_server(), "trusted": probe_server(forwardCredentials=True)},
    )
    server = start_server(mcp_config=config, auth_mode="api_key", api_keys="key-of-ada")
    await wait_ready(server, "plain", "trusted")
    fake_groq.script(
        tool_call_reply(("plain__show_meta", {}), ("trusted__show_meta", {})), text_reply("ok")
    )
    async with server.connect(additional_headers={"Authorization": "Bearer key-of-ada"}) as client:
        ready = await client.ready()
        frames = await client.ask("who am I?")
    plain, trusted = _result(frames, "plain__show_meta"), _result(frames, "trusted__show_meta")
    assert plain["session_id"] == ready["session_id"]
    assert plain["owner"].startswith("key:")
    assert trusted["owner"] == plain["owner"]
    assert "credentials" not in plain
    assert trusted["credentials"] == "key-of-ada"


async def test_a_changed_tool_list_is_offered_to_the_model_at_once(
    start_server: StartServer, fake_groq: FakeGroq, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "mcp.json", {"probe": probe_server()})
    server = start_server(mcp_config=config)
    await wait_ready(server, "probe")
    fake_groq.script(
        tool_call_reply(("probe__add_tool", {"name": "fresh"})),
        text_reply("added"),
        tool_call_reply(("probe__fresh", {})),
        text_reply("used it"),
    )
    async with server.connect() as client:
        await client.ready()
        await client.ask("add a tool")
        health = await wait_ready(server, "probe")

        async def listed_again() -> bool:
            nonlocal health
            health = await wait_ready(server, "probe")
            return bool(health["probe"]["tools"] == 3)

        await wait_until(listed_again, 10, what="the new tool listed")
        frames = await client.ask("use it")
    offered_before = [t["function"]["name"] for t in fake_groq.requests[0].body["tools"]]
    offered_after = [t["function"]["name"] for t in fake_groq.requests[2].body["tools"]]
    assert "probe__fresh" not in offered_before
    assert "probe__fresh" in offered_after
    assert health["probe"]["tool_list_changes"] >= 1
    assert _result(frames, "probe__fresh") == {"result": "fresh is here"}


async def test_the_everything_server_announces_its_late_tools_and_is_listed_again(
    start_server: StartServer, tmp_path: Path
) -> None:
    # It registers some tools only once it knows the client's capabilities, after the
    # handshake, and says so with `notifications/tools/list_changed`.
    config = write_config(tmp_path / "mcp.json", {"everything": everything_stdio()})
    server = start_server(mcp_config=config)
    health: dict[str, Any] = {}

    async def relisted() -> bool:
        nonlocal health
        health = await wait_ready(server, "everything")
        return bool(health["everything"]["tool_list_changes"] >= 1)

    await wait_until(relisted, 20, what="the everything server's list_changed")
    assert health["everything"]["tools"] >= 10
