"""The tools of the configured MCP servers, offered to the model next to the built-in ones."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import jsonschema
import mcp_types as types
from pydantic import JsonValue

from app.services.llm.base import ToolDefinition
from app.services.mcp.config import HttpServerConfig, McpConfig
from app.services.mcp.link import McpServerLink
from app.services.mcp.names import model_names
from app.services.mcp.results import tool_result
from app.services.metrics import Metrics
from app.services.tools.registry import Tool, ToolContext, ToolError
from app.services.tracing import McpOrigin

# The runner's own bound on an MCP call is a backstop just past the link's: the link's timeout
# fires first, so that it can check whether the server hangs.
_BACKSTOP_S = 0.5
# What MCP servers find in each call's `_meta` (docs/tools.md).
META_SESSION_ID = "session_id"
META_OWNER = "owner"
META_CREDENTIALS = "credentials"


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool of one MCP server, under its model-facing name."""

    name: str
    definition: ToolDefinition
    server: str
    remote_name: str
    requires_approval: bool
    link: McpServerLink = field(repr=False)
    metrics: Metrics = field(repr=False)

    @property
    def timeout_s(self) -> float:
        return self.link.call_timeout_s + _BACKSTOP_S

    async def call(self, raw_arguments: Mapping[str, JsonValue], context: ToolContext) -> JsonValue:
        """Check the arguments against the server's schema, call the server, read its result."""
        _check_arguments(raw_arguments, self.definition["function"]["parameters"])
        started = asyncio.get_running_loop().time()
        ok = False
        try:
            result = await self.link.call(
                self.remote_name, dict(raw_arguments), meta=self._meta(context)
            )
            value = tool_result(result)
            ok = True
            return value
        finally:
            elapsed = asyncio.get_running_loop().time() - started
            self.metrics.observe_mcp_call(self.server, self.remote_name, ok=ok, seconds=elapsed)

    def _meta(self, context: ToolContext) -> types.RequestParamsMeta:
        meta: dict[str, Any] = {META_SESSION_ID: context.session_id}
        if context.owner is not None:
            meta[META_OWNER] = context.owner
        if self.link.config.forward_credentials and context.credentials is not None:
            meta[META_CREDENTIALS] = context.credentials
        return cast(types.RequestParamsMeta, meta)


def mcp_origin(tool: Tool | None) -> McpOrigin | None:
    """Where a tool runs, for its trace span, when it is an MCP server's (None otherwise)."""
    if not isinstance(tool, McpTool):
        return None
    config = tool.link.config
    if isinstance(config, HttpServerConfig):
        url = urlsplit(config.url)
        return McpOrigin(server_address=url.hostname or config.url, server_port=url.port)
    return McpOrigin(server_address=tool.server)  # stdio: a local child, known by its name


def _check_arguments(arguments: Mapping[str, JsonValue], schema: dict[str, JsonValue]) -> None:
    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
    except jsonschema.SchemaError:
        return  # the server's schema is its own business: it checks the call itself
    errors = sorted(validator_class(schema).iter_errors(dict(arguments)), key=str)
    if errors:
        parts = [
            f"{'.'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}" for e in errors
        ]
        raise ToolError(f"invalid arguments: {'; '.join(parts[:5])}")


@dataclass(slots=True)
class _Cached:
    key: tuple[object, ...]
    tools: list[McpTool]


class McpToolSource:
    """The MCP servers' tools as they are now, named `<server>__<tool>` (`names.model_names`)."""

    def __init__(self, config: McpConfig, *, call_timeout_s: float, metrics: Metrics) -> None:
        self._metrics = metrics
        self._version = 0
        self._cached: _Cached | None = None
        self.links = [
            McpServerLink(
                name,
                server,
                call_timeout_s=call_timeout_s,
                on_tools_changed=self._changed,
            )
            for name, server in config.enabled().items()
        ]

    def _changed(self) -> None:
        self._version += 1

    def tools(self, *, taken: Sequence[str]) -> list[McpTool]:
        key = (self._version, tuple(taken))
        if self._cached is None or self._cached.key != key:
            self._cached = _Cached(key, self._build(taken))
        return self._cached.tools

    def _build(self, taken: Sequence[str]) -> list[McpTool]:
        # A server that never answered has no tools yet; one being restarted keeps its last
        # list, and a call meanwhile tells the model it is restarting.
        offered = [(link, tool) for link in self.links for tool in link.tools]
        names = model_names(((link.name, tool.name) for link, tool in offered), taken=taken)
        tools = []
        for link, tool in offered:
            name = names[(link.name, tool.name)]
            definition: ToolDefinition = {
                "type": "function",
                "function": {
                    "name": name,
                    "description": tool.description or tool.title or tool.name,
                    "parameters": tool.input_schema,
                },
            }
            tools.append(
                McpTool(
                    name=name,
                    definition=definition,
                    server=link.name,
                    remote_name=tool.name,
                    requires_approval=link.config.requires_approval(tool.name),
                    link=link,
                    metrics=self._metrics,
                )
            )
        return sorted(tools, key=lambda tool: tool.name)

    def health(self) -> dict[str, dict[str, str | int]]:
        """Each server's state, for `/readyz` details."""
        return {
            link.name: {
                "state": link.health.state.value,
                "tools": len(link.tools),
                "restarts": link.health.restarts,
                "tool_list_changes": link.health.tool_list_changes,
            }
            | ({"last_error": link.health.last_error} if link.health.last_error else {})
            for link in self.links
        }
