"""New connections per client address (CONNECTIONS_PER_MINUTE_PER_IP): past the limit a
connection is refused after the handshake with `rate_limited` and 1008; `X-Forwarded-For`
names the client only when the peer is one of TRUSTED_PROXIES."""

from __future__ import annotations

import asyncio
from ipaddress import ip_network
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from app.routers.client_address import client_address
from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq
from tests.support.client import Frame, WsClient
from tests.support.process import ServerProcess, fake_groq_env
from tests.support.server import RunningServer

LOOPBACK = "127.0.0.1"


async def _first_frame(server: RunningServer, forwarded_for: str | None = None) -> Frame:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
    async with server.connect(additional_headers=headers) as client:
        frame = await client.recv()
        if frame["type"] == "error":
            frame["close_code"] = await client.closed_with()
    return frame


async def test_connections_past_the_limit_are_refused_with_1008(start_server: StartServer) -> None:
    server = start_server(connections_per_minute_per_ip=3)
    frames = [await _first_frame(server) for _ in range(4)]
    assert [frame["type"] for frame in frames] == ["session.ready"] * 3 + ["error"]
    assert frames[-1] == {
        **frames[-1],
        "code": "rate_limited",
        "retryable": True,
        "close_code": 1008,
    }
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, verify=False) as http:
        metrics = (await http.get("/metrics")).text
    assert "chat_connection_refusals_total 1.0" in metrics


async def test_forwarded_for_counts_only_from_a_trusted_proxy(start_server: StartServer) -> None:
    trusted = start_server(connections_per_minute_per_ip=1, trusted_proxies=f"{LOOPBACK}/32")
    # Behind the trusted proxy, each forwarded client has its own allowance.
    assert (await _first_frame(trusted, "198.51.100.1"))["type"] == "session.ready"
    assert (await _first_frame(trusted, "198.51.100.2"))["type"] == "session.ready"
    assert (await _first_frame(trusted, "198.51.100.1"))["code"] == "rate_limited"
    untrusted = start_server(connections_per_minute_per_ip=1)
    # From an untrusted peer the header is ignored: both count as the peer.
    assert (await _first_frame(untrusted, "198.51.100.1"))["type"] == "session.ready"
    second = await _first_frame(untrusted, "198.51.100.2")
    assert second.get("code") == "rate_limited", second


async def test_python_m_app_serve_leaves_forwarded_for_to_trusted_proxies(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    # uvicorn alone would take X-Forwarded-For from 127.0.0.1 (its default
    # --forwarded-allow-ips): the production entry point turns that off.
    env = fake_groq_env(fake_groq.base_url, database_url=f"sqlite:///{tmp_path}/a.db", grace_s=1)
    server = ServerProcess({**env, "CONNECTIONS_PER_MINUTE_PER_IP": "1"}, tmp_path, serve=True)
    await asyncio.to_thread(server.start)
    frames = []
    try:
        for forwarded_for in ("198.51.100.1", "198.51.100.2"):
            headers = {"X-Forwarded-For": forwarded_for}
            async with connect(server.ws_url, additional_headers=headers) as connection:
                frames.append(await WsClient(connection).recv())
    finally:
        server.stop()
    assert frames[0]["type"] == "session.ready"
    assert frames[1].get("code") == "rate_limited", frames[1]


def test_the_client_is_the_nearest_untrusted_hop() -> None:
    proxies = [ip_network("10.0.0.0/8")]
    assert client_address("10.0.0.5", "203.0.113.9, 10.0.0.7", proxies) == "203.0.113.9"
    # A client's forged entries further left are never read.
    assert client_address("10.0.0.5", "1.1.1.1, 203.0.113.9", proxies) == "203.0.113.9"
    assert client_address("192.0.2.1", "203.0.113.9", proxies) == "192.0.2.1"
    assert client_address("10.0.0.5", "garbage", proxies) == "garbage"
    assert client_address("10.0.0.5", None, proxies) == "10.0.0.5"
