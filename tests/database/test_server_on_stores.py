"""The whole server on PostgreSQL and on Supabase (fake REST API): conversation, resume, summary.

The same turns as tests/routers/test_ws_conversation.py, through a real uvicorn server whose
store is PostgreSQL (`DATABASE_URL=postgresql://...`) or Supabase (`SUPABASE_URL`+`SUPABASE_KEY`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import BACKGROUND_SUMMARY, StartServer
from tests.database.conftest import clear_tables, run_sync
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.fakes.postgrest_server import FakePostgrest
from tests.support.client import types_of
from tests.support.rest import get_events, wait_for_session
from tests.support.server import RunningServer


@pytest.fixture(params=["postgresql", "supabase"])
def server_on_store(request: pytest.FixtureRequest, start_server: StartServer) -> RunningServer:
    """A server whose store is a fresh PostgreSQL database or the fake Supabase REST API."""
    if request.param == "postgresql":
        dsn: str = request.getfixturevalue("pg_database")
        run_sync(clear_tables(dsn))
        return start_server(database_url=dsn, database_pool_max=4)
    fake: FakePostgrest = request.getfixturevalue("fake_postgrest")
    return start_server(database_url=None, supabase_url=fake.url, supabase_key=fake.key)


@pytest.fixture
async def http(server_on_store: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    url = server_on_store.http_url
    async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as client:
        yield client


async def test_readyz_names_the_store(
    server_on_store: RunningServer, http: httpx.AsyncClient
) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["store"] == server_on_store.settings.store_kind()
    assert response.json()["store"] in {"postgresql", "supabase"}


async def test_conversation_with_a_tool_is_stored_and_resumed(
    server_on_store: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})),
        text_reply("User 123 is ", "Ada Lovelace."),
        text_reply("Again."),
    )
    async with server_on_store.connect() as client:
        session_id = (await client.ready())["session_id"]
        frames = await client.ask("Can you fetch the profile for user 123?", message_id="m-1")
    assert types_of(frames)[2:4] == ["tool.call", "tool.result"]
    assert frames[3]["result"]["name"] == "Ada Lovelace"  # the demo profile, read from the store
    assert frames[-1]["seq"] == 4

    async with server_on_store.connect(f"session_id={session_id}&after_seq=1") as client:
        ready = await client.ready()
        assert ready["resumed"] is True
        assert [event["seq"] for event in ready["events"]] == [2, 3, 4]
        await client.send({"type": "user.message", "text": "dup", "id": "m-1"})
        ack = await client.recv()
        assert (ack["type"], ack["seq"]) == ("user.message", 1)  # idempotent: the stored one
        second = await client.ask("once more")
    assert second[0]["seq"] == 5
    assert second[-1]["seq"] == 6

    # The teardown flushes the last events before it asks for the summary.
    session = await wait_for_session(
        http,
        session_id,
        lambda s: s["event_count"] == 6 and s["summary_status"] == "done",
        what="the last events and the summary",
    )
    assert session["summary"] == BACKGROUND_SUMMARY
    events = await get_events(http, session_id)
    assert [event["seq"] for event in events] == [1, 2, 3, 4, 5, 6]
    assert events[3]["text"] == "User 123 is Ada Lovelace."


async def test_sessions_list_and_delete(
    server_on_store: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("one"), text_reply("two"))
    ids = []
    for question in ("first", "second"):
        async with server_on_store.connect() as client:
            ids.append((await client.ready())["session_id"])
            await client.ask(question)
    for session_id in ids:
        await wait_for_session(http, session_id, lambda s: s["summary_status"] == "done")
    listed = (await http.get("/api/sessions")).json()
    assert [s["id"] for s in listed["sessions"]] == ids[::-1]
    assert (await http.delete(f"/api/sessions/{ids[0]}")).status_code == 204
    assert (await http.get(f"/api/sessions/{ids[0]}")).status_code == 404
    assert (await http.get("/api/sessions/not-a-uuid")).status_code == 404
