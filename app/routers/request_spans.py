"""A span per REST request (`GET /api/sessions/{session_id}`), when tracing is on.

Probes and scrapes (`/healthz`, `/readyz`, `/metrics`) and static files are left out: they
would bury the requests a team looks for. The WebSocket has its own span (`routers/ws.py`).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.services.runtime import Runtime

_UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/favicon.ico"})
_UNTRACED_PREFIX = "/static/"


def _traced(scope: Scope) -> bool:
    if scope["type"] != "http":
        return False
    path: str = scope["path"]
    return path not in _UNTRACED_PATHS and not path.startswith(_UNTRACED_PREFIX)


class RequestSpans:
    """Wraps each traced HTTP request in a span named for its route, with its status."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime: Runtime | None = getattr(scope["app"].state, "runtime", None)
        if runtime is None or not runtime.tracing.enabled or not _traced(scope):
            await self._app(scope, receive, send)
            return
        status = 500  # what the client gets when the app fails before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        headers = Headers(scope=scope)
        with runtime.tracing.http_request(scope["method"], scope["path"], headers) as span:
            try:
                await self._app(scope, receive, send_noting_status)
            finally:
                # Routing wrote the matched route and its parameters into the scope.
                route = getattr(scope.get("route"), "path", None)
                session_id = scope.get("path_params", {}).get("session_id")
                span.finished(route=route, session_id=session_id, status=status)
