"""An MCP tool's trace span says it is an MCP `tools/call` and where the server is."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.services.mcp.test_mcp_tools import wait_ready
from tests.services.test_tracing import attrs, one, spans_named
from tests.support.mcp_servers import everything_http, time_server, write_config


async def test_mcp_tool_spans_name_the_method_and_the_server(
    start_server: StartServer, fake_groq: FakeGroq, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    with everything_http() as url:
        config = write_config(tmp_path / "mcp.json", {"time": time_server(), "web": {"url": url}})
        server = start_server(span_exporter=exporter, mcp_config=config)
        await wait_ready(server, "time", "web")
        fake_groq.script(
            tool_call_reply(
                ("time__get_current_time", {"timezone": "UTC"}),
                ("web__echo", {"message": "traced"}),
                ("calculate", {"expression": "2 + 2"}),
            ),
            text_reply("ok"),
        )
        async with server.connect() as client:
            await client.ready()
            await client.ask("trace these")
    names = ["execute_tool time__get_current_time", "execute_tool web__echo"]
    spans = await spans_named(exporter, *names, "execute_tool calculate")
    stdio, http = attrs(one(spans, names[0])), attrs(one(spans, names[1]))
    assert stdio["mcp.method.name"] == "tools/call"
    assert stdio["server.address"] == "time"
    assert http["mcp.method.name"] == "tools/call"
    assert http["server.address"] == "127.0.0.1"
    assert http["server.port"] == int(url.rsplit(":", 1)[1].split("/")[0])
    assert "mcp.method.name" not in attrs(one(spans, "execute_tool calculate"))
