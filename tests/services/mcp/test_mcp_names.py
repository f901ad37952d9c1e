"""Tool names within the model APIs' rule, collisions resolved the same way every time, and
the servers' input schemas passed to the model as given: on the real servers' tool lists."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from app.services.mcp.config import load_mcp_config
from app.services.mcp.names import model_names
from app.services.mcp.source import McpToolSource
from app.services.metrics import Metrics
from app.services.tools import DEFAULT_TOOLS, ToolRegistry
from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.services.mcp.test_mcp_tools import wait_ready
from tests.support.mcp_servers import EVERYTHING_JS, everything_stdio, time_server, write_config

NAME_RULE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
LONG = ("a-team-with-a-very-long-server-name-" * 2)[:64]  # the longest name allowed


def test_names_follow_the_rule_and_do_not_depend_on_order() -> None:
    pairs = [("a.b", "t"), ("a_b", "t"), ("s", "x y/z"), (LONG, "get_current_time")]
    names = model_names(pairs)
    assert names == model_names(reversed(pairs))
    assert all(NAME_RULE.fullmatch(name) for name in names.values())
    assert len(set(names.values())) == len(pairs)
    assert names[("a.b", "t")] == "a_b__t"  # first in order keeps the plain name
    assert names[("a_b", "t")].startswith("a_b__t_")
    assert names[("s", "x y/z")] == "s__x_y_z"
    # A built-in tool keeps its name; the MCP tool moves aside.
    assert model_names([("s", "t")], taken=["s__t"])[("s", "t")] != "s__t"


async def _listed(parameters: StdioServerParameters) -> dict[str, dict[str, Any]]:
    return {tool.name: tool.input_schema for tool in await _listed_tools(parameters)}


async def test_the_model_gets_the_real_servers_tools_named_and_their_schemas_as_given(
    start_server: StartServer, fake_groq: FakeGroq, tmp_path: Path
) -> None:
    servers = {
        "everything": everything_stdio(),
        "team.time": time_server(),
        "team_time": time_server(),
        LONG: time_server(tools=["get_current_time"]),
    }
    server = start_server(mcp_config=write_config(tmp_path / "mcp.json", servers))
    await wait_ready(server, *servers)
    fake_groq.script(text_reply("hi"))
    async with server.connect() as client:
        await client.ready()
        await client.ask("hello")
    offered = {
        tool["function"]["name"]: tool["function"] for tool in fake_groq.requests[0].body["tools"]
    }
    assert all(NAME_RULE.fullmatch(name) for name in offered)
    everything = await _listed(
        StdioServerParameters(command="node", args=[str(EVERYTHING_JS), "stdio"])
    )
    time = await _listed(TIME)
    for name, schema in everything.items():
        if name == "simulate-research-query":
            continue  # runs only as an MCP task: not offered
        assert offered[f"everything__{name}"]["parameters"] == schema
    assert "everything__simulate-research-query" not in offered
    # "team.time" comes first in order and keeps the plain name; "team_time" moves aside.
    for name, schema in time.items():
        assert offered[f"team_time__{name}"]["parameters"] == schema
    team_time = [name for name in offered if name.startswith("team_time__")]
    assert len(team_time) == 4
    [long_name] = [name for name in offered if name.startswith(LONG[:20])]
    assert len(long_name) <= 64
    assert offered[long_name]["parameters"] == time["get_current_time"]
    # Built-in tools are still there, under their own names.
    assert {"calculate", "get_current_time", "fetch_user_profile"} <= set(offered)


async def test_require_approval_is_kept_on_each_tool_of_a_real_list(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    servers = {
        "time": time_server(),
        "strict": time_server(requireApproval=True),
        "some": time_server(requireApproval=["convert_time"]),
    }
    path.write_text(json.dumps({"mcpServers": servers}))
    source = McpToolSource(load_mcp_config(str(path)), call_timeout_s=5, metrics=Metrics())
    listed = await _listed_tools(TIME)
    for link in source.links:  # as if each had just listed its tools
        link.tools = listed
    registry = ToolRegistry(DEFAULT_TOOLS, sources=[source])
    approval = {
        name: tool.requires_approval
        for name in registry.names
        if (tool := registry.get(name)) is not None and tool.server is not None
    }
    assert approval == {
        "time__get_current_time": False,
        "time__convert_time": False,
        "strict__get_current_time": True,
        "strict__convert_time": True,
        "some__get_current_time": False,
        "some__convert_time": True,
    }
    builtin = registry.get("calculate")
    assert builtin is not None
    assert builtin.requires_approval is False


TIME = StdioServerParameters(command=sys.executable, args=["-m", "mcp_server_time"])


async def _listed_tools(parameters: StdioServerParameters) -> list[types.Tool]:
    async with Client(parameters, cache=None) as client:
        return (await client.list_tools()).tools
