"""How the app reaches an MCP server: a stdio child behind the launcher, or streamable HTTP;
either way through the SDK's transports, with a read side that tells when the connection ends."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

import anyio
from mcp.client import Transport
from mcp.client._transport import ReadStream, TransportStreams  # the SDK names them only here
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.message import SessionMessage

from app.services.mcp import launcher
from app.services.mcp.config import HttpServerConfig, ServerConfig, StdioServerConfig


def server_transport(config: ServerConfig, *, on_end: Callable[[], None]) -> Transport:
    """The SDK transport for `config`; `on_end` runs when the server's side of it ends."""
    if isinstance(config, StdioServerConfig):
        streams = stdio_client(_launched(config))
    else:
        streams = _http_streams(config)
    return _Watched(streams, on_end=on_end)


def _launched(config: StdioServerConfig) -> StdioServerParameters:
    """The server's command behind the launcher, so the child dies with this process."""
    # Found here, so that a wrong command is named in `/readyz`, not "connection closed".
    search_path = config.env.get("PATH", os.environ.get("PATH"))
    cwd = config.cwd or os.getcwd()
    command = config.command
    if os.sep not in command and shutil.which(command, path=search_path) is None:
        raise FileNotFoundError(f"command not found: {command!r}")
    if os.sep in command and not os.access(os.path.join(cwd, command), os.X_OK):
        raise FileNotFoundError(f"not an executable file: {command!r}")
    return StdioServerParameters(
        command=sys.executable,
        # -I -S: the launcher needs only the standard library, and starts faster without site.
        args=["-I", "-S", launcher.__file__, str(os.getpid()), config.command, *config.args],
        env=config.env,
        cwd=config.cwd,
    )


@asynccontextmanager
async def _http_streams(config: HttpServerConfig) -> AsyncIterator[TransportStreams]:
    # In a thread: a new HTTP client loads its TLS certificates (tens of ms of CPU).
    http = await asyncio.to_thread(create_mcp_http_client, headers=config.headers)
    async with http, streamable_http_client(config.url, http_client=http) as streams:
        yield streams


class _Watched:
    """A transport whose read side tells when it ends: a stdio server that exits while idle
    is restarted at once, not at the next call."""

    def __init__(self, inner: Transport, *, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    async def __aenter__(self) -> TransportStreams:
        read, write = await self._inner.__aenter__()
        return _WatchedRead(read, self._on_end), write

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, traceback)


class _WatchedRead:
    def __init__(
        self, inner: ReadStream[SessionMessage | Exception], on_end: Callable[[], None]
    ) -> None:
        self._inner = inner
        self._on_end = on_end

    async def receive(self) -> SessionMessage | Exception:
        try:
            item = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._on_end()
            raise
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
