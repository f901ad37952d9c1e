"""One MCP server as the app sees it: started (or reached) with the app, its tools listed and
kept current, restarted with backoff when it crashes or hangs, stopped with the app.

All talk with the server goes through the official `mcp` SDK; its errors are translated here,
once, into `ToolError`s the model sees and into the link's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.client import InputRequiredRoundsExceededError
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import CONNECTION_CLOSED
from pydantic import ValidationError

from app.services.mcp.config import ServerConfig
from app.services.mcp.transports import server_transport
from app.services.tools.registry import ToolError

log = logging.getLogger(__name__)

_RESTART_FIRST_S = 0.2
_RESTART_MAX_S = 30.0
# Starting a server and listing its tools; a server slower than this is retried.
_CONNECT_TIMEOUT_S = 30.0
# A server that does not list its tools within its call timeout, and at least this, is hung: a
# short call timeout must not turn a busy machine's slow answer into a restart.
_HUNG_AFTER_S = 2.0
_CLIENT_INFO = types.Implementation(name="realtime-conversations", version="1.0.0")


class LinkState(StrEnum):
    """`starting` until the first listing, `ready` while it answers, `degraded` while it is
    being restarted (or never started), `stopped` after the app's shutdown."""

    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    STOPPED = "stopped"


@dataclass(slots=True)
class LinkHealth:
    """How a server is doing, for `/readyz` and the metrics."""

    state: LinkState = LinkState.STARTING
    restarts: int = 0
    last_error: str | None = None
    tool_list_changes: int = 0


class McpServerLink:
    """The connection to one configured MCP server, owned by a supervisor service (`run`)."""

    def __init__(
        self,
        name: str,
        config: ServerConfig,
        *,
        call_timeout_s: float,
        on_tools_changed: Callable[[], None],
    ) -> None:
        self.name = name
        self.config = config
        self.call_timeout_s = config.timeout or call_timeout_s
        self.health = LinkHealth()
        self.tools: list[types.Tool] = []
        self._on_tools_changed = on_tools_changed
        self._client: Client | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._broken = False
        self._relist = False
        self._probe = False
        self._was_ready = False

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask `run` to close the connection (a stdio child is stopped) and return."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Connect, serve until the server breaks, wait, connect again; until `stop()`."""
        delay = _RESTART_FIRST_S
        while not self._stopping.is_set():
            self._was_ready = False
            try:
                await self._serve()
            except Exception as e:  # every failure of a server is the server's: retry it
                self._set_down(_describe(e))
            if self._stopping.is_set():
                break
            # A server that worked and then broke is restarted soon; one that keeps failing
            # to start is tried less and less often.
            delay = _RESTART_FIRST_S if self._was_ready else delay
            log.warning(
                "MCP server %s is down (%s); restarting in %.1f s",
                self.name,
                self.health.last_error,
                delay,
            )
            await self._sleep(delay)
            delay = min(delay * 2, _RESTART_MAX_S)
            self.health.restarts += 1
        self.health.state = LinkState.STOPPED

    async def _sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass

    async def _serve(self) -> None:
        """One connection, until it breaks (raises) or the app stops (returns)."""
        self._broken = self._relist = self._probe = False
        async with contextlib.AsyncExitStack() as stack:
            # The handshake and the first listing are bounded: a server that hangs at start
            # is retried like one that fails.
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                client = await stack.enter_async_context(self._client_for_server())
                await self._list_tools(client)
            self._client = client
            self._was_ready = True
            self.health.state = LinkState.READY
            self.health.last_error = None
            log.info("MCP server %s ready: %d tools", self.name, len(self.tools))
            # Servers of the 2026 protocol announce changes on a `subscriptions/listen`
            # stream; earlier ones send the notification unasked (`_on_message`).
            listener = asyncio.create_task(self._listen(client), name=f"mcp-listen-{self.name}")
            try:
                await self._watch(client)
            finally:
                self._client = None
                listener.cancel()
                await asyncio.wait([listener])

    def _client_for_server(self) -> Client:
        return Client(
            server_transport(self.config, on_end=lambda: self._break("the connection closed")),
            message_handler=self._on_message,
            client_info=_CLIENT_INFO,
            cache=None,  # a listing must be the server's current one
        )

    async def _listen(self, client: Client) -> None:
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _change in subscription:
                    self._tools_list_changed()
        except ListenNotSupportedError:
            return
        except Exception as e:  # the SDK's, whatever it is: a broken connection shows elsewhere
            # The server may simply not offer the stream (MCPError, SubscriptionLost).
            log.info("MCP server %s: no tool change stream (%s)", self.name, _describe(e))

    async def _watch(self, client: Client) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            if self._broken:
                raise ConnectionError(self.health.last_error or "the connection broke")
            if self._probe or self._relist:
                await self._check(client)

    async def _check(self, client: Client) -> None:
        """After a listing change (or a call that timed out): list again; a server that does
        not answer within its call timeout (at least `_HUNG_AFTER_S`) is hung: restarted."""
        hung_check = self._probe
        self._probe = self._relist = False
        try:
            async with asyncio.timeout(max(self.call_timeout_s, _HUNG_AFTER_S)):
                await self._list_tools(client)
        except TimeoutError as e:
            if hung_check:
                raise ConnectionError("the server does not answer (hung)") from e
            raise

    async def _list_tools(self, client: Client) -> None:
        tools: list[types.Tool] = []
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        self.tools = [tool for tool in tools if self._offered(tool)]
        self._on_tools_changed()

    def _offered(self, tool: types.Tool) -> bool:
        allowed = self.config.tools
        if allowed is not None and tool.name not in allowed:
            return False
        # A tool that runs only as an MCP task cannot be called as a plain tool.
        execution = tool.execution
        return execution is None or execution.task_support != "required"

    async def _on_message(self, message: types.ServerNotification | Exception) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._tools_list_changed()
        elif isinstance(message, Exception):
            log.warning("MCP server %s: transport error: %s", self.name, _describe(message))

    def _tools_list_changed(self) -> None:
        self.health.tool_list_changes += 1
        self._relist = True
        self._wake.set()

    def _set_down(self, reason: str) -> None:
        self.health.state = LinkState.DEGRADED
        self.health.last_error = reason

    def _break(self, reason: str) -> None:
        """The connection is unusable: `run` closes it (stopping the child) and reconnects."""
        if self.health.state is LinkState.READY:
            self._set_down(reason)
        self._broken = True
        self._wake.set()

    # ------------------------------------------------------------------ calls

    async def call(
        self, tool: str, arguments: dict[str, Any], *, meta: types.RequestParamsMeta
    ) -> types.CallToolResult:
        """Call `tool`; every failure comes back as a `ToolError` for the model."""
        client = self._client
        if client is None or self.health.state is not LinkState.READY:
            detail = self.health.last_error or self.health.state.value
            raise ToolError(f"MCP server {self.name!r} is not available now ({detail})")
        try:
            async with asyncio.timeout(self.call_timeout_s):
                return await client.call_tool(tool, arguments, meta=meta)
        except TimeoutError as e:
            self._probe = True  # slow, or hung? `_check` finds out
            self._wake.set()
            raise ToolError(f"timed out after {self.call_timeout_s:g} s") from e
        except MCPError as e:
            if e.code == CONNECTION_CLOSED:
                self._break("the connection closed during a call")
                raise ToolError(
                    f"MCP server {self.name!r} went away during the call; it is being restarted"
                ) from e
            raise ToolError(f"MCP server {self.name!r} refused the call: {e.error.message}") from e
        except (ValidationError, InputRequiredRoundsExceededError) as e:
            raise ToolError(
                f"MCP server {self.name!r} answered with a result not understood"
            ) from e
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
            self._break(_describe(e))
            raise ToolError(f"MCP server {self.name!r} cannot be reached; retrying") from e


def _describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup) and error.exceptions:
        return _describe(error.exceptions[0])
    return f"{type(error).__name__}: {error}"[:300]
