"""The REST session API against a real server: listing, paging, reading, events, deleting."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import BACKGROUND_SUMMARY
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.rest import Json, get_events, get_session, wait_for_session
from tests.support.server import RunningServer

SUMMARY_STATUSES = {"none", "pending", "running", "done", "failed"}


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=5, trust_env=False) as client:
        yield client


async def open_and_leave(server: RunningServer) -> str:
    """A connection that never speaks (its session is never stored); returns the id it was
    given once the socket is closed."""
    async with server.connect() as client:
        ready = await client.ready()
    session_id: str = ready["session_id"]
    return session_id


async def chat_and_leave(server: RunningServer, *questions: str) -> str:
    """A new session with one answered question per item (replies scripted by the caller)."""
    async with server.connect() as client:
        ready = await client.ready()
        for question in questions:
            done = (await client.ask(question))[-1]
            assert done["status"] == "completed", done
    session_id: str = ready["session_id"]
    return session_id


async def spoke_once(server: RunningServer, fake_groq: FakeGroq) -> str:
    """A new session with one answered question (a session is stored with its first message)."""
    fake_groq.script(text_reply("Noted."))
    return await chat_and_leave(server, "hello")


async def summarized(http: httpx.AsyncClient, session_id: str) -> Json:
    """Wait until the session's teardown and summary are over (the summary comes last)."""
    return await wait_for_session(
        http, session_id, lambda s: s["summary_status"] == "done", what="the summary"
    )


def stored_event_count(server: RunningServer, session_id: str) -> int:
    with server.db() as db:
        row = db.execute(
            "select count(*) from session_events where session_id = ?", (session_id,)
        ).fetchone()
    return int(row[0])


def detail_of(response: httpx.Response) -> object:
    """The `detail` of a `{"detail": ...}` error body (None when the body is not one)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("detail") if isinstance(body, dict) and set(body) == {"detail"} else None


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert detail_of(response), response.text


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# ---------------------------------------------------------------- listing and paging


async def test_list_is_newest_first(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    created = [await spoke_once(server, fake_groq) for _ in range(3)]
    response = await http.get("/api/sessions")
    assert response.status_code == 200
    page = response.json()
    assert [session["id"] for session in page["sessions"]] == created[::-1]
    assert page["next"] is None


async def test_pages_follow_the_cursor_and_hold_every_session_once(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    created = [await spoke_once(server, fake_groq) for _ in range(5)]
    pages: list[Json] = []
    query = "limit=2"
    while True:
        response = await http.get(f"/api/sessions?{query}")
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
        assert len(pages) < 10, "the cursor never ends"
        query = f"limit=2&before={quote(cursor, safe='')}"
    assert [len(page["sessions"]) for page in pages] == [2, 2, 1]
    listed = [session["id"] for page in pages for session in page["sessions"]]
    assert listed == created[::-1]
    assert len(set(listed)) == len(created)


async def test_a_full_last_page_still_ends_with_null_next(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    created = [await spoke_once(server, fake_groq) for _ in range(2)]
    first = (await http.get("/api/sessions?limit=1")).json()
    second = (await http.get(f"/api/sessions?limit=1&before={quote(first['next'])}")).json()
    assert [s["id"] for s in first["sessions"] + second["sessions"]] == created[::-1]
    assert second["next"] is None


FOREIGN_CURSORS = {
    "plain word": "garbage",
    "not base64": "!!!!",
    "no date": b64("not a date|some-id"),
    "no separator": b64("no separator at all"),
    "not utf-8": base64.urlsafe_b64encode(b"\xff\xfe\xfd|x").decode(),
}


async def test_a_garbage_cursor_is_400(http: httpx.AsyncClient) -> None:
    answers: dict[str, tuple[int, object]] = {}
    for name, cursor in FOREIGN_CURSORS.items():
        response = await http.get(f"/api/sessions?before={quote(cursor, safe='')}")
        answers[name] = (response.status_code, detail_of(response))
    assert {name: status for name, (status, _) in answers.items()} == dict.fromkeys(
        FOREIGN_CURSORS, 400
    ), answers
    assert all(detail for _, detail in answers.values()), answers


async def test_a_forged_cursor_with_a_date_that_has_no_utc_form_is_400(
    http: httpx.AsyncClient,
) -> None:
    # Well-formed, but 0001-01-01 at +01:00 is before year 1 in UTC: still not a cursor we made.
    cursor = b64("0001-01-01T00:00:00+01:00|00000000-0000-0000-0000-000000000000")
    assert_error(await http.get(f"/api/sessions?before={cursor}"), 400)


async def test_limit_out_of_range_is_422(http: httpx.AsyncClient) -> None:
    limits = ["0", "1000", "101", "-1", "ten"]
    answers = {limit: await http.get(f"/api/sessions?limit={limit}") for limit in limits}
    assert {limit: r.status_code for limit, r in answers.items()} == dict.fromkeys(limits, 422)
    assert all(detail_of(r) for r in answers.values())
    assert (await http.get("/api/sessions?limit=100")).status_code == 200
    assert (await http.get("/api/sessions?limit=1")).status_code == 200


# ---------------------------------------------------------------- one session


async def test_session_has_every_field_with_its_type(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("One."), text_reply("Two."))
    session_id = await chat_and_leave(server, "first", "second")
    session = await summarized(http, session_id)
    assert set(session) >= {
        "id",
        "status",
        "created_at",
        "updated_at",
        "title",
        "summary",
        "summary_status",
        "event_count",
        "model",
    }
    assert session["id"] == session_id
    assert session["status"] == "idle"
    created_at = datetime.fromisoformat(session["created_at"])
    updated_at = datetime.fromisoformat(session["updated_at"])
    assert created_at.tzinfo is not None
    assert updated_at.tzinfo is not None
    assert created_at <= updated_at
    assert session["title"] in (None, "A short summary")  # the title is written in the background
    assert session["summary"] == BACKGROUND_SUMMARY
    assert session["summary_status"] == "done"
    assert session["model"] == "test-model"
    assert type(session["event_count"]) is int
    assert session["event_count"] == 4
    assert session["event_count"] == len(await get_events(http, session_id))
    assert session["event_count"] == stored_event_count(server, session_id)


async def test_updated_at_moves_with_new_events(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    session_id = await spoke_once(server, fake_groq)
    before = await summarized(http, session_id)
    assert before["event_count"] == 2
    fake_groq.script(text_reply("Later."))
    async with server.connect(f"session_id={session_id}") as client:
        await client.ready()
        await client.ask("hello again")
    after = await wait_for_session(
        http, session_id, lambda s: s["event_count"] == 4, what="the second exchange"
    )
    assert after["created_at"] == before["created_at"]
    assert datetime.fromisoformat(after["updated_at"]) > datetime.fromisoformat(
        before["updated_at"]
    )


async def test_status_is_active_while_connected_and_idle_after(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("Here."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.ask("anyone?")
        assert (await get_session(http, session_id))["status"] == "active"
        listed = (await http.get("/api/sessions")).json()["sessions"]
        assert [s["status"] for s in listed if s["id"] == session_id] == ["active"]
    await wait_for_session(http, session_id, lambda s: s["status"] == "idle", what="idle")


# ---------------------------------------------------------------- events


async def test_events_are_oldest_first_and_page_with_after_seq_and_limit(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("Alpha."), text_reply("Beta."))
    session_id = await chat_and_leave(server, "q1", "q2")
    await summarized(http, session_id)

    events = await get_events(http, session_id)
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert [e["type"] for e in events] == [
        "user.message",
        "assistant.message",
        "user.message",
        "assistant.message",
    ]
    assert [e.get("text") for e in events] == ["q1", "Alpha.", "q2", "Beta."]
    assert all("created_at" in e for e in events)

    assert [e["seq"] for e in await get_events(http, session_id, "after_seq=1&limit=2")] == [2, 3]
    assert [e["seq"] for e in await get_events(http, session_id, "after_seq=3")] == [4]
    assert [e["seq"] for e in await get_events(http, session_id, "limit=1")] == [1]
    assert await get_events(http, session_id, "after_seq=4") == []


async def test_a_session_that_never_spoke_was_never_stored(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    session_id = await open_and_leave(server)
    assert_error(await http.get(f"/api/sessions/{session_id}"), 404)
    assert_error(await http.get(f"/api/sessions/{session_id}/events"), 404)
    assert (await http.get("/api/sessions")).json()["sessions"] == []


# ---------------------------------------------------------------- unknown and malformed ids

BAD_IDS = {
    "not-a-uuid": "not-a-uuid",
    "dot-dot": "../etc",
    "300-chars": "a" * 300,
    "unknown-uuid": str(uuid.UUID(int=0x1234)),
    "nearly-uuid": "12345678-1234-1234-1234-12345678901z",
}
METHODS = {"get": ("GET", ""), "events": ("GET", "/events"), "delete": ("DELETE", "")}


async def test_malformed_or_unknown_id_is_404(http: httpx.AsyncClient) -> None:
    statuses: dict[str, int] = {}
    details: dict[str, object] = {}
    for id_name, bad_id in BAD_IDS.items():
        for method_name, (verb, suffix) in METHODS.items():
            url = f"/api/sessions/{quote(bad_id, safe='')}{suffix}"
            response = await http.request(verb, url)
            statuses[f"{method_name} {id_name}"] = response.status_code
            details[f"{method_name} {id_name}"] = detail_of(response)
    assert statuses == dict.fromkeys(statuses, 404)
    assert all(details.values()), details


async def test_unknown_uuid_is_404_even_when_other_sessions_exist(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    await open_and_leave(server)
    assert_error(await http.get(f"/api/sessions/{uuid.uuid4()}"), 404)


# ---------------------------------------------------------------- delete


async def test_delete_removes_the_session_and_its_events(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("Kept until deleted."))
    session_id = await chat_and_leave(server, "remember this")
    other_id = await spoke_once(server, fake_groq)
    await summarized(http, session_id)
    assert stored_event_count(server, session_id) == 2

    response = await http.delete(f"/api/sessions/{session_id}")
    assert response.status_code == 204
    assert response.content == b""

    assert_error(await http.get(f"/api/sessions/{session_id}"), 404)
    assert_error(await http.get(f"/api/sessions/{session_id}/events"), 404)
    assert_error(await http.delete(f"/api/sessions/{session_id}"), 404)
    with server.db() as db:
        sessions = db.execute("select count(*) from sessions where id = ?", (session_id,))
        assert sessions.fetchone()[0] == 0
    assert stored_event_count(server, session_id) == 0
    listed = (await http.get("/api/sessions")).json()["sessions"]
    assert [s["id"] for s in listed] == [other_id]


async def test_delete_while_the_socket_is_open_ends_the_conversation(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("Soon gone."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.ask("delete me")
        assert (await get_session(http, session_id))["status"] == "active"
        assert (await http.delete(f"/api/sessions/{session_id}")).status_code == 204
        ended = await client.recv()
        code = await client.closed_with()
    assert ended == {**ended, "type": "error", "code": "session_not_found", "retryable": False}
    assert code == 4404
    assert_error(await http.get(f"/api/sessions/{session_id}"), 404)
    with server.db() as db:
        row = db.execute("select count(*) from sessions where id = ?", (session_id,)).fetchone()
    assert row[0] == 0


# ---------------------------------------------------------------- summaries seen through REST


async def test_a_session_without_messages_is_never_stored_nor_summarized(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    await open_and_leave(server)
    # Stopping waits for the teardown (and any summary it would start) to finish.
    server.stop()
    with server.db() as db:
        assert db.execute("select count(*) from sessions").fetchone()[0] == 0
    assert fake_groq.background_requests == []
    assert fake_groq.requests == []


async def test_summary_fields_reach_the_list_too(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("Sure."))
    session_id = await chat_and_leave(server, "summarize me")
    await summarized(http, session_id)
    listed = (await http.get("/api/sessions")).json()["sessions"]
    assert len(listed) == 1
    assert listed[0]["summary"] == BACKGROUND_SUMMARY
    assert listed[0]["summary_status"] in SUMMARY_STATUSES
    assert listed[0]["summary_status"] == "done"
    assert listed[0]["event_count"] == 2
