"""Fixtures for the router tests that run on both stores: a server on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import StartServer
from tests.database.conftest import clear_tables, pg_database, run_sync  # noqa: F401 (fixture)
from tests.support.server import RunningServer

BootServer = Callable[..., RunningServer]
RestClient = Callable[[RunningServer], httpx.AsyncClient]


@pytest.fixture(params=["sqlite", "postgresql"])
def boot(request: pytest.FixtureRequest, start_server: StartServer) -> BootServer:
    """Start a server on this test's store (SQLite file or a cleared PostgreSQL database);
    every call starts one on the same database and state directory (a restart)."""
    store: dict[str, Any] = {}
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("pg_database")
        run_sync(clear_tables(dsn))
        store = {"database_url": dsn, "database_pool_max": 4}

    def start(**overrides: Any) -> RunningServer:
        return start_server(**store, **overrides)

    return start


@pytest.fixture
async def rest() -> AsyncIterator[RestClient]:
    """An HTTP client for a server's REST API (closed at the end of the test)."""
    clients: list[httpx.AsyncClient] = []

    def client_of(server: RunningServer) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=server.http_url, timeout=10, trust_env=False)
        clients.append(client)
        return client

    yield client_of
    for client in clients:
        await client.aclose()
