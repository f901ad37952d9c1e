"""PostgreSQL goes away mid-conversation (the server is stopped, then started): the
conversation goes on, acknowledgements wait and catch up, /readyz says 503 meanwhile, and no
acknowledged event is lost or duplicated."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import IN_CI, StartServer
from tests.database.conftest import throwaway_database
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.rest import wait_for_session
from tests.support.waiting import wait_until

CONFIGS = Path("/etc/postgresql")


@pytest.fixture
def outage_database() -> Iterator[str]:
    yield from throwaway_database("outage_test")


def _cluster() -> list[str]:
    """The command that controls the machine's PostgreSQL cluster."""
    versions = sorted(CONFIGS.glob("*")) if CONFIGS.exists() else []
    if not versions or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI must be able to restart the machine's PostgreSQL (pg_ctlcluster, root)")
        pytest.skip("restarting PostgreSQL needs pg_ctlcluster and root")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main"]


async def _set_outage(cluster: list[str], *, down: bool) -> None:
    """Stop the PostgreSQL server (fast: open connections are cut), or start it again."""
    command = [*cluster, "stop", "-m", "fast"] if down else [*cluster, "start"]
    process = await asyncio.create_subprocess_exec(*command)
    assert await process.wait() == 0, command


async def test_the_conversation_survives_a_database_outage(
    start_server: StartServer, fake_groq: FakeGroq, outage_database: str
) -> None:
    cluster = _cluster()
    server = start_server(database_url=outage_database, database_timeout_s=1.0)
    fake_groq.answer_model("test-model", text_reply("answered"))
    async with server.connect() as client, httpx.AsyncClient(base_url=server.http_url) as http:
        session_id = (await client.ready())["session_id"]
        await client.ask("before", message_id="m1")
        await _set_outage(cluster, down=True)
        try:

            async def not_ready() -> bool:
                return (await http.get("/readyz")).status_code == 503

            await wait_until(not_ready, 10, what="/readyz to report the outage")
            await client.send({"type": "user.message", "text": "during", "id": "m2"})
            with pytest.raises(TimeoutError):
                await client.recv(timeout=0.5)  # not acknowledged while the store is gone
        finally:
            await _set_outage(cluster, down=False)
        ack = await client.recv(timeout=30)
        done = (await client.recv_until("response.done", timeout=30))[-1]
        await wait_for_session(http, session_id, lambda s: s["event_count"] == 4, timeout=30)
        assert (await http.get("/readyz")).status_code == 200
    assert ack["type"] == "user.message"
    assert ack["id"] == "m2"
    assert ack["seq"] == 3
    assert done["status"] == "completed"
    conn = await asyncpg.connect(outage_database, timeout=5)
    try:
        rows = await conn.fetch(
            "select seq, type, message_id from session_events where session_id = $1 order by seq",
            session_id,
        )
    finally:
        await conn.close()
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert [r["message_id"] for r in rows if r["type"] == "user.message"] == ["m1", "m2"]
