"""Connections that never speak create no stored session: strangers cannot grow the store by
connecting."""

from __future__ import annotations

import asyncio

from tests.support.server import RunningServer

CONNECTIONS = 1000
BATCH = 100


async def _connect_and_leave(server: RunningServer) -> str:
    async with server.connect() as client:
        session_id: str = (await client.ready())["session_id"]
    return session_id


async def test_a_thousand_connections_that_never_speak_leave_no_session_rows(
    server: RunningServer,
) -> None:
    given: set[str] = set()
    for _ in range(CONNECTIONS // BATCH):
        given |= set(await asyncio.gather(*(_connect_and_leave(server) for _ in range(BATCH))))
    # Stopping waits for every connection's teardown to end.
    server.stop()
    with server.db() as db:
        sessions = db.execute("select count(*) from sessions").fetchone()[0]
        leases = db.execute("select count(*) from session_leases").fetchone()[0]
    assert len(given) == CONNECTIONS  # each was given its own session id at once
    assert (sessions, leases) == (0, 0)
