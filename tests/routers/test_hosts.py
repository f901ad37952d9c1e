"""ALLOWED_HOSTS against DNS rebinding: the `Host` header is checked on every HTTP request and
every WebSocket, whatever the auth mode, on a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from app.routers.hosts import host_name, host_refusal
from tests.conftest import StartServer
from tests.support.client import WsClient
from tests.support.server import RunningServer

REBOUND = "evil.example"


@asynccontextmanager
async def _socket_as(
    server: RunningServer, host: str, *, origin: str | None = None
) -> AsyncIterator[WsClient]:
    """A WebSocket to the server whose handshake names `host` (a name that now points here)."""
    url = f"ws://{host}:{server.port}/ws"
    # The address is the server's: the name only travels in the Host header, as after rebinding.
    async with connect(
        url,
        host="127.0.0.1",
        port=server.port,
        origin=None if origin is None else Origin(origin),
        open_timeout=5,
    ) as ws:
        yield WsClient(ws)


async def _http_get(server: RunningServer, path: str, host: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http:
        return await http.get(path, headers={"Host": host})


async def test_a_rebound_page_is_refused_on_the_websocket(server: RunningServer) -> None:
    # The page was loaded from the attacker's name on this very port: "same origin" as Host.
    async with _socket_as(server, REBOUND, origin=f"http://{REBOUND}:{server.port}") as client:
        frame = await client.recv()
        assert frame["type"] == "error", frame  # not session.ready
        code = await client.closed_with()
    assert (frame["code"], frame["retryable"]) == ("forbidden", False)
    assert REBOUND in frame["message"]
    assert "ALLOWED_HOSTS" in frame["message"]
    assert code == 4403


@pytest.mark.parametrize("path", ["/healthz", "/", "/api/sessions", "/static/app.js"])
async def test_a_rebound_page_gets_400_on_http(server: RunningServer, path: str) -> None:
    response = await _http_get(server, path, f"{REBOUND}:{server.port}")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert REBOUND in detail
    assert "ALLOWED_HOSTS" in detail


async def test_the_host_is_checked_before_credentials_in_every_auth_mode(
    start_server: StartServer,
) -> None:
    server = start_server(auth_mode="api_key", api_keys="the-key")
    async with _socket_as(server, REBOUND, origin=f"http://{REBOUND}:{server.port}") as client:
        assert (await client.recv())["code"] == "forbidden"
        assert await client.closed_with() == 4403
    response = await _http_get(server, "/api/sessions?token=the-key", REBOUND)
    assert response.status_code == 400


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "LOCALHOST.", "[::1]"])
async def test_local_names_are_allowed_by_default(server: RunningServer, host: str) -> None:
    assert (await _http_get(server, "/healthz", f"{host}:{server.port}")).status_code == 200
    async with _socket_as(server, host) as client:
        assert (await client.ready())["type"] == "session.ready"


async def test_a_configured_domain_is_served_and_the_defaults_no_longer_are(
    start_server: StartServer,
) -> None:
    server = start_server(allowed_hosts="chat.example.com,*.preview.example.com")
    for host in ("chat.example.com", "CHAT.example.com:443", "pr-7.preview.example.com"):
        assert (await _http_get(server, "/healthz", host)).status_code == 200, host
    origin = f"http://chat.example.com:{server.port}"
    async with _socket_as(server, "chat.example.com", origin=origin) as ok:
        assert (await ok.ready())["type"] == "session.ready"
    assert (await _http_get(server, "/healthz", "127.0.0.1")).status_code == 400
    assert (await _http_get(server, "/healthz", "preview.example.com")).status_code == 400


async def test_a_star_allows_any_host(start_server: StartServer) -> None:
    server = start_server(allowed_hosts="*")
    assert (await _http_get(server, "/healthz", REBOUND)).status_code == 200


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Example.COM", "example.com"),
        ("example.com:8000", "example.com"),
        ("localhost.:80", "localhost"),
        ("[::1]", "::1"),
        ("[::1]:8000", "::1"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("::1", None),  # IPv6 without brackets is not a Host header
        ("example.com:http", None),
        ("[::1", None),
        ("[::1]8000", None),
        ("", None),
        (":8000", None),
    ],
)
def test_host_names_are_read_like_a_browser_writes_them(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_a_missing_or_malformed_host_is_refused_unless_any_is_allowed() -> None:
    allowed = ["localhost"]
    assert host_refusal(None, allowed) is not None
    assert host_refusal("[::1", allowed) is not None
    assert host_refusal(None, ["*"]) is None
