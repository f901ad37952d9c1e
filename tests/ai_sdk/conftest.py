"""Fixtures of the `ai` package tests: the Node client per transport, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.ai_sdk_client import NodeChatClient, Transport, missing_node_client
from tests.support.guard_plugin import NO_SKIPS
from tests.support.mcp_servers import loopback_http
from tests.support.server import RunningServer


@pytest.fixture(params=["http", "ws"])
def transport(request: pytest.FixtureRequest) -> Transport:
    """Each test runs with both transports of the ai package."""
    value: Transport = request.param
    return value


@pytest.fixture
def node_ready() -> None:
    """Node.js and the ai package are here; without them, a failure where every test must run,
    a skip elsewhere."""
    missing = missing_node_client()
    if missing is not None:
        if NO_SKIPS:
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture
def node_client(node_ready: None, server: RunningServer, transport: Transport) -> NodeChatClient:
    """The Node client on `server`."""
    return NodeChatClient(server.http_url, transport)


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with loopback_http(server.http_url) as client:
        yield client
