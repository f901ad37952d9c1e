"""What a client sees when the store refuses one session's writes, on a real server on PostgreSQL:
the refusal stays with that session, a writer that lost its lease stops and says so, a deletion
elsewhere ends the conversation, and what the database would refuse never reaches it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from app.services.storable import REPLACEMENT
from tests.conftest import StartServer
from tests.database.conftest import throwaway_database
from tests.fakes.groq_server import (
    FakeGroq,
    error_reply,
    hold_reply,
    text_reply,
    tool_call_reply,
)
from tests.support.logs import captured_logs
from tests.support.rest import get_events, get_session, wait_for_session
from tests.support.server import RunningServer


@pytest.fixture
def database() -> Iterator[str]:
    yield from throwaway_database("fencing_test")


@pytest.fixture
async def admin(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database, timeout=5)
    yield conn
    await conn.close()


def on_postgres(start_server: StartServer, database: str, **settings: object) -> RunningServer:
    return start_server(database_url=database, **settings)


async def stored(admin: asyncpg.Connection, session_id: str) -> list[tuple[int, str]]:
    rows = await admin.fetch(
        "select seq, type from session_events where session_id = $1 order by seq", session_id
    )
    return [(row["seq"], row["type"]) for row in rows]


async def test_a_client_id_the_database_refuses_harms_no_other_session(
    database: str, admin: asyncpg.Connection, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = on_postgres(start_server, database)
    fake_groq.script(tool_call_reply(("get_current_time", {})), text_reply("It is noon."))
    async with server.connect() as busy, server.connect() as careless:
        busy_id = (await busy.ready())["session_id"]
        careless_id = (await careless.ready())["session_id"]
        await busy.send({"type": "user.message", "text": "time?", "id": "t1"})
        # PostgreSQL refuses NUL in text: one batch with it would have rolled back the other
        # session's events (written in the same batch) before this was refused at the edge.
        await careless.send({"type": "user.message", "text": "hi", "id": "bad\x00id"})
        refusal = await careless.recv()
        done = (await busy.recv_until("response.done"))[-1]
    assert refusal == {**refusal, "type": "error", "code": "invalid_event"}
    assert done["status"] == "completed"
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        await wait_for_session(http, busy_id, lambda s: s["event_count"] == 4)
    assert await stored(admin, busy_id) == [
        (1, "user.message"),
        (2, "tool.call"),
        (3, "tool.result"),
        (4, "assistant.message"),
    ]
    assert await stored(admin, careless_id) == []


async def test_model_output_the_database_refuses_is_stored_as_streamed(
    database: str, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = on_postgres(start_server, database)
    odd = "nul\x00here"
    fake_groq.script(
        tool_call_reply(("calculate", {"expression": "1+1", "note\x00": odd})),
        text_reply("a ", odd, " end"),
    )
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        frames = await client.ask("go", message_id="m1")
    done = frames[-1]
    deltas = "".join(f["text"] for f in frames if f["type"] == "response.delta")
    call = next(f for f in frames if f["type"] == "tool.call")
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        await wait_for_session(http, session_id, lambda s: s["event_count"] == 4)
        events = await get_events(http, session_id)
    assert done["status"] == "completed"
    assert done["text"] == deltas == f"a nul{REPLACEMENT}here end"
    assert events[3]["text"] == done["text"]
    assert call["arguments"] == {"expression": "1+1", f"note{REPLACEMENT}": f"nul{REPLACEMENT}here"}
    assert events[1]["arguments"] == call["arguments"]


async def test_an_upstream_error_message_the_database_refuses_is_stored_as_sent(
    database: str, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = on_postgres(start_server, database)
    fake_groq.script(error_reply(400, code="bad_request", message="echo nul\x00here"))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        done = (await client.ask("go", message_id="m1"))[-1]
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            await wait_for_session(http, session_id, lambda s: s["event_count"] == 2)
            events = await get_events(http, session_id)
        # The session goes on: its writer was not refused.
        await client.speak(lambda: fake_groq.script(text_reply("fine")))
    assert done["status"] == "failed"
    assert done["error"]["message"] == f"bad_request: echo nul{REPLACEMENT}here"
    assert events[1]["error"] == done["error"]


async def test_summaries_and_titles_the_database_would_refuse_are_stored_repaired(
    database: str, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = on_postgres(
        start_server, database, summary_model="odd-summary", title_model="odd-title"
    )
    fake_groq.answer_model("odd-summary", text_reply("a nul\x00summary"))
    fake_groq.answer_model("odd-title", text_reply("A nul\x00title"))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.speak(lambda: fake_groq.script(text_reply("Hi.")))
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        await wait_for_session(http, session_id, lambda s: s["title"] is not None)
        session = await wait_for_session(
            http, session_id, lambda s: s["summary_status"] in {"done", "failed"}
        )
    assert session["summary_status"] == "done"
    assert session["summary"] == f"a nul{REPLACEMENT}summary"
    assert session["title"] == f"A nul{REPLACEMENT}title"


async def _steal_lease(admin: asyncpg.Connection, session_id: str) -> None:
    """What another instance's takeover does: a new holder, the next epoch."""
    await admin.execute(
        "update session_leases set holder = 'another-instance', epoch = epoch + 1, "
        "state = 'live' where session_id = $1",
        session_id,
    )


async def test_a_writer_that_lost_its_lease_stops_and_the_client_resumes_elsewhere(
    database: str, admin: asyncpg.Connection, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = on_postgres(start_server, database, lease_ttl_s=60)
    fake_groq.answer_model("test-model", text_reply("fine"))
    async with server.connect() as moved, server.connect() as other:
        moved_id = (await moved.ready())["session_id"]
        await other.ready()
        await moved.ask("one", message_id="m1")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            await wait_for_session(http, moved_id, lambda s: s["event_count"] == 2)
        await _steal_lease(admin, moved_id)
        await moved.send({"type": "user.message", "text": "two", "id": "m2"})
        ending = await moved.recv()
        code = await moved.closed_with()
        other_done = (await other.ask("still here?"))[-1]
    assert ending == {**ending, "type": "error", "code": "session_busy", "retryable": True}
    assert code == 1013
    assert other_done["status"] == "completed"
    # Nothing the fenced writer tried after the theft was stored.
    assert await stored(admin, moved_id) == [(1, "user.message"), (2, "assistant.message")]


async def test_a_heartbeat_that_finds_its_lease_gone_ends_an_idle_conversation(
    database: str, admin: asyncpg.Connection, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = on_postgres(start_server, database, lease_ttl_s=0.6)
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.speak(lambda: fake_groq.script(text_reply("Hi.")))
        await _steal_lease(admin, session_id)
        ending = await client.recv()
        code = await client.closed_with()
    assert (ending["code"], ending["retryable"], code) == ("session_busy", True, 1013)


async def _two_instances(
    start_server: StartServer, database: str, **settings: object
) -> tuple[RunningServer, RunningServer]:
    return on_postgres(start_server, database, **settings), on_postgres(
        start_server, database, **settings
    )


async def test_a_session_live_on_another_instance_is_active_and_deleting_it_ends_it(
    database: str, admin: asyncpg.Connection, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    here, elsewhere = await _two_instances(start_server, database, lease_ttl_s=0.6)
    async with here.connect() as client, here.connect() as bystander:
        session_id = (await client.ready())["session_id"]
        await client.speak(lambda: fake_groq.script(text_reply("Hi.")))
        fake_groq.answer_model("test-model", hold_reply(*["w "] * 40, delay_s=0.02))
        await bystander.ready()
        await bystander.send({"type": "user.message", "text": "keep talking", "id": "b1"})
        async with httpx.AsyncClient(base_url=elsewhere.http_url) as http:
            assert (await get_session(http, session_id))["status"] == "active"
            assert (await http.delete(f"/api/sessions/{session_id}")).status_code == 204
        ending = await client.recv()
        code = await client.closed_with()
        bystander_done = (await bystander.recv_until("response.done"))[-1]
    assert ending == {**ending, "type": "error", "code": "session_not_found"}
    assert code == 4404
    assert bystander_done["status"] == "completed"
    assert await stored(admin, session_id) == []


async def test_rest_status_is_idle_once_the_client_left_any_instance(
    database: str, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    here, elsewhere = await _two_instances(start_server, database)
    async with here.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.speak(lambda: fake_groq.script(text_reply("Hi.")))
    async with httpx.AsyncClient(base_url=elsewhere.http_url) as http:
        await wait_for_session(http, session_id, lambda s: s["status"] == "idle")


async def _resume_or_refusal(server: RunningServer, session_id: str) -> tuple[str, int | None]:
    async with server.connect(f"session_id={session_id}") as client:
        first = await client.recv()
        if first["type"] == "session.ready":
            return "session.ready", None
        return str(first["code"]), await client.closed_with()


async def test_a_delete_racing_a_resume_refuses_the_resume_cleanly(
    database: str, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = on_postgres(start_server, database)
    session_ids = []
    for _ in range(12):
        async with server.connect() as client:
            session_ids.append((await client.ready())["session_id"])
            await client.speak(lambda: fake_groq.script(text_reply("Hi.")))
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        for session_id in session_ids:
            await wait_for_session(http, session_id, lambda s: s["status"] == "idle")
        with captured_logs(logging.ERROR) as errors:
            resumes, deletes = await asyncio.gather(
                asyncio.gather(*[_resume_or_refusal(server, id_) for id_ in session_ids]),
                asyncio.gather(*[http.delete(f"/api/sessions/{id_}") for id_ in session_ids]),
            )
    assert {response.status_code for response in deletes} == {204}
    # Each resume either won the race or was told the session is gone: never a bare drop.
    assert set(resumes) <= {("session.ready", None), ("session_not_found", 4404)}, resumes
    assert errors.messages() == []
