"""A real uvicorn server running our app in a background thread, on a free loopback port."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import uvicorn
from websockets.asyncio.client import connect

from app.main import create_app
from app.services.tools import ToolFunction
from app.settings import Settings
from tests.support.client import WsClient

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

_START_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RunningServer:
    """Our app served by uvicorn, as a client sees it."""

    def __init__(
        self,
        settings: Settings,
        *,
        tools: Sequence[ToolFunction],
        span_exporter: SpanExporter | None = None,
    ) -> None:
        self.settings = settings
        self.port = free_port()
        # `span_exporter`: the app's own tracer provider sends its spans there (tests read them).
        self.app = create_app(settings, tools=tools, span_exporter=span_exporter)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            # asyncio's loop, not uvloop: the guards watch asyncio's sockets, callbacks and tasks.
            loop="asyncio",
            ws_max_size=max(settings.ws_max_bytes * 4, 16 * 1024 * 1024),
            # The app alone judges X-Forwarded-For (TRUSTED_PROXIES); uvicorn's own rewrite
            # would trust any loopback peer (docs/operations.md).
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"server-{self.port}")

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> RunningServer:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            self._thread.join(0.01)  # wakes as soon as uvicorn reports it is serving
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=_START_TIMEOUT_S)
        if self._thread.is_alive():
            raise RuntimeError("the server did not stop")

    @asynccontextmanager
    async def connect(self, query: str = "", **options: Any) -> AsyncIterator[WsClient]:
        """A WebSocket client on `/ws?query`; options go to `websockets.connect`."""
        url = f"{self.ws_url}?{query}" if query else self.ws_url
        async with connect(url, open_timeout=5, close_timeout=2, **options) as connection:
            yield WsClient(connection)

    def db(self) -> sqlite3.Connection:
        """A separate connection to the server's SQLite file, to check what was stored."""
        connection = sqlite3.connect(self.settings.sqlite_path(), timeout=5)
        connection.row_factory = sqlite3.Row
        return connection
