"""A small MCP server of the tests' own, on the official SDK, for what the reference servers
cannot show: the `_meta` a call carries, and a tool list that changes when asked.

Run as `python tests/support/mcp_probe_server.py` (stdio)."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer

server: MCPServer[Any] = MCPServer("probe")


@server.tool()
async def show_meta(ctx: Context[Any, Any]) -> dict[str, Any]:
    """The `_meta` of this call, as the server received it."""
    meta = ctx.request_context.meta or {}
    return {key: value for key, value in dict(meta).items() if "/" not in key}


@server.tool()
async def add_tool(ctx: Context[Any, Any], name: str) -> str:
    """Add a tool called `name` and tell the client its tool list changed."""

    async def added() -> str:
        return f"{name} is here"

    server.add_tool(added, name=name, description=f"A tool added at run time: {name}")
    await ctx.notify_tools_changed()  # 2026 protocol: to `subscriptions/listen` streams
    await ctx.session.send_tool_list_changed()  # earlier ones: the notification
    return f"added {name}"


if __name__ == "__main__":
    server.run("stdio")
