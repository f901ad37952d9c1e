"""A browser front-end on another origin (a useChat app's dev server, or the team's own site)
may call the HTTP API when `/ws` would take its Origin: local pages and `ALLOWED_ORIGINS`."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import StartServer

PREFLIGHT = {
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization,content-type",
}


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:5173", True),
        ("http://127.0.0.1:3000", True),
        ("https://app.example.com", True),
        ("https://evil.example", False),
        ("http://localhost.evil.example", False),
    ],
)
async def test_preflight_of_post_api_chat_follows_the_origin_rule(
    start_server: StartServer, origin: str, allowed: bool
) -> None:
    server = start_server(allowed_origins="https://app.example.com/")
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.options("/api/chat", headers={"origin": origin, **PREFLIGHT})
        answer = await http.get("/api/chat/someChat/messages", headers={"origin": origin})
    if allowed:
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        assert answer.headers["access-control-allow-origin"] == origin
    else:
        assert response.status_code == 400
        assert "access-control-allow-origin" not in answer.headers
