"""A `http.server` on a free loopback port, served from its own thread for a `with` block: the
base of the small fakes that need no more than a request handler (JWKS, OTLP receiver)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the tests' output clean."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackHttpServer:
    """Serves `handler` on 127.0.0.1 while the `with` block runs."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, name: str) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # A short poll interval only makes shutdown quick; requests are served at once.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name=name
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
