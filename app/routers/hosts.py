"""`ALLOWED_HOSTS`: requests whose `Host` header names another host are refused.

A page on an attacker's domain whose name is later pointed at this server (DNS rebinding) is
"same origin" with it, so the Origin check lets it in; its requests still carry the attacker's
host name in `Host`, and that is what this refuses. HTTP requests get 400 here; a WebSocket is
refused by its handler after the handshake (`error` frame, then 4403), as its other refusals are.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


def host_name(header: str) -> str | None:
    """The host name of a `Host` header: lowercased, port and IPv6 brackets dropped; None when
    the header is not `name[:port]` or `[ipv6][:port]`."""
    value = header.strip().lower()
    if value.startswith("["):
        name, bracket, port = value[1:].partition("]")
        if not bracket or (port and not _is_port(port)):
            return None
        return name or None
    name, colon, port = value.partition(":")
    if colon and not port.isdigit():  # also an IPv6 address without brackets
        return None
    return name.removesuffix(".") or None  # `localhost.` is `localhost`


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit()


def host_matches(name: str, allowed: Sequence[str]) -> bool:
    """`*` allows any host; `*.example.com` any name under it; other entries match exactly."""
    for entry in allowed:
        if entry == "*" or name == entry:
            return True
        if entry.startswith("*.") and name.endswith(entry[1:]):
            return True
    return False


def host_refusal(header: str | None, allowed: Sequence[str]) -> str | None:
    """Why a request with this `Host` header is refused, or None when it is allowed."""
    if "*" in allowed:
        return None
    if header is None:
        return "the request has no Host header, and ALLOWED_HOSTS requires one"
    name = host_name(header)
    if name is None:
        return f"the Host header {header[:100]!r} is not a host name"
    if not host_matches(name, allowed):
        return f"the host {name!r} is not served here: it is not in ALLOWED_HOSTS"
    return None


class AllowedHostsMiddleware:
    """HTTP requests whose `Host` is not in `ALLOWED_HOSTS` get 400 with the reason."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Sequence[str]) -> None:
        self._app = app
        self._allowed = list(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # WebSockets go on: `/ws` refuses them itself, once the handshake is accepted.
        if scope["type"] == "http":
            reason = host_refusal(Headers(scope=scope).get("host"), self._allowed)
            if reason is not None:
                await JSONResponse({"detail": reason}, status_code=400)(scope, receive, send)
                return
        await self._app(scope, receive, send)
