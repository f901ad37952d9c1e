"""The retention sweep runs as a supervised service of the server: an old empty session left in
the store goes by itself, a session that spoke stays (RETENTION_DAYS is off by default)."""

from __future__ import annotations

import asyncio
import uuid

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.server import RunningServer
from tests.support.waiting import wait_until

OLD = "2020-01-01T00:00:00.000000Z"


def _insert_old_empty_session(server: RunningServer) -> str:
    session_id = str(uuid.uuid4())
    with server.db() as db:
        db.execute(
            "insert into sessions (id, owner, created_at, updated_at, model) "
            "values (?, null, ?, ?, 'm')",
            (session_id, OLD, OLD),
        )
    return session_id


def _session_ids(server: RunningServer) -> set[str]:
    with server.db() as db:
        return {str(row[0]) for row in db.execute("select id from sessions")}


async def test_the_server_sweeps_old_empty_sessions_by_itself(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(retention_sweep_s=0.2)
    async with server.connect() as client:
        spoken = str((await client.ready())["session_id"])
        await client.speak(lambda: fake_groq.script(text_reply("Kept.")))
    old = await asyncio.to_thread(_insert_old_empty_session, server)

    async def swept() -> bool:
        return old not in await asyncio.to_thread(_session_ids, server)

    await wait_until(swept, 10, what="the old empty session to be swept")
    assert spoken in await asyncio.to_thread(_session_ids, server)
