"""`POST /api/chat` and its companions against a real server: the UI message stream's framing
and content, what is stored, regenerate, resume, stop, and the refusals (docs/ai-sdk.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.services.ai_sdk.chat_ids import derived_session_id
from tests.conftest import StartServer
from tests.database.conftest import throwaway_database
from tests.fakes.groq_server import (
    FakeGroq,
    Gate,
    error_reply,
    gated_reply,
    text_reply,
    tool_call_reply,
)
from tests.support.rest import get_events
from tests.support.server import RunningServer
from tests.support.ui_stream import (
    UIStream,
    assert_well_formed,
    chat_body,
    read_ui_stream,
    user_message,
)
from tests.support.waiting import wait_until

SEED = "Can you fetch the profile for user 123?"


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, start_server: StartServer) -> Iterator[RunningServer]:
    if request.param == "sqlite":
        yield start_server()
        return
    for dsn in throwaway_database("aisdk"):
        yield start_server(database_url=dsn, database_pool_max=4)


@pytest_asyncio.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as client:
        yield client


async def send(
    http: httpx.AsyncClient, chat_id: str, text: str, message_id: str, **extra: Any
) -> UIStream:
    body = chat_body(chat_id, user_message(text, message_id), **extra)
    async with http.stream("POST", "/api/chat", json=body) as response:
        return await read_ui_stream(response)


async def test_the_seed_example_streams_a_tool_part_and_text_and_stores_them(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})),
        text_reply("User 123 is ", "Ada."),
    )
    stream = await send(http, "chatSeed1", SEED, "m1")

    assert_well_formed(stream)
    assert stream.types() == [
        "start",
        "start-step",
        "tool-input-available",
        "tool-output-available",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    start = stream.first("start")
    assert start["messageMetadata"]["model"] == "test-model"
    assert "createdAt" in start["messageMetadata"]
    call = stream.first("tool-input-available")
    assert call["toolName"] == "fetch_user_profile"
    assert call["input"] == {"user_id": "123"}
    output = stream.first("tool-output-available")
    assert output["toolCallId"] == call["toolCallId"]
    assert output["output"]["name"]  # the demo profile of user 123
    finish = stream.first("finish")
    assert finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["usage"]["total_tokens"] > 0

    assert start["messageMetadata"]["sessionId"] == derived_session_id("chatSeed1", None)
    events = await stored(http, "chatSeed1", 4)
    assert [e["type"] for e in events] == [
        "user.message",
        "tool.call",
        "tool.result",
        "assistant.message",
    ]
    assert events[0]["id"] == "m1"
    assert events[-1]["response_id"] == start["messageId"]
    assert events[-1]["status"] == "completed"
    assert events[-1]["text"] == stream.text() == "User 123 is Ada."


async def test_messages_load_the_stored_chat_as_ui_messages(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    assert (await http.get("/api/chat/neverUsed/messages")).json() == []
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})), text_reply("Found Ada.")
    )
    stream = await send(http, "chatLoad", SEED, "u1")

    messages = (await http.get("/api/chat/chatLoad/messages")).json()
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["id"] == "u1"
    assert messages[0]["parts"] == [{"type": "text", "text": SEED}]
    answer = messages[1]
    assert answer["id"] == stream.first("start")["messageId"]
    tool_part = answer["parts"][1]
    assert tool_part["type"] == "tool-fetch_user_profile"
    assert tool_part["state"] == "output-available"
    assert tool_part["input"] == {"user_id": "123"}
    assert tool_part["output"] == stream.first("tool-output-available")["output"]
    assert answer["parts"][-1] == {"type": "text", "text": "Found Ada.", "state": "done"}


async def test_a_session_begun_on_the_websocket_continues_with_use_chat_and_back(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("first answer"))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.ask("first question")
    fake_groq.script(text_reply("second answer"))

    stream = await send(http, session_id, "second question", "m2")

    assert stream.text() == "second answer"
    second_request = fake_groq.requests[1].body["messages"]
    assert [m.get("content") for m in second_request[1:]] == [
        "first question",
        "first answer",
        "second question",
    ]
    fake_groq.script(text_reply("third answer"))
    async with server.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
        assert [e["type"] for e in ready["events"]].count("assistant.message") == 2
        await client.ask("third question")
    assert len(await stored(http, session_id, 6)) == 6


async def test_regenerate_replaces_the_last_answer_for_the_model_and_the_ui(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("a first try"), text_reply("a better try"))
    first = await send(http, "chatRegen", "Tell me a joke", "j1")
    old_id = first.first("start")["messageId"]

    body = {"id": "chatRegen", "messages": [], "trigger": "regenerate-message", "messageId": old_id}
    async with http.stream("POST", "/api/chat", json=body) as response:
        second = await read_ui_stream(response)

    assert_well_formed(second)
    new_id = second.first("start")["messageId"]
    assert new_id != old_id
    assert second.text() == "a better try"
    assert second.first("finish")["messageMetadata"]["supersedes"] == old_id
    sent = fake_groq.requests[1].body["messages"]
    assert [m.get("content") for m in sent[1:]] == ["Tell me a joke"]
    messages = (await http.get("/api/chat/chatRegen/messages")).json()
    assert [m["id"] for m in messages] == ["j1", new_id]
    events = await stored(http, "chatRegen", 3)
    answers = [e for e in events if e["type"] == "assistant.message"]
    assert [(a["response_id"], a.get("supersedes")) for a in answers] == [
        (old_id, None),
        (new_id, old_id),
    ]


async def test_regenerate_of_an_answer_that_is_not_the_last_is_refused(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("one"), text_reply("two"))
    first = await send(http, "chatOld", "q1", "q1")
    await send(http, "chatOld", "q2", "q2")
    body = {
        "id": "chatOld",
        "trigger": "regenerate-message",
        "messageId": first.first("start")["messageId"],
    }
    response = await http.post("/api/chat", json=body)
    assert response.status_code == 400
    assert response.json()["detail"] == "only the last answer can be regenerated"


async def test_a_resent_message_gets_its_stored_answer_and_no_second_one(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("only ", "once"))
    first = await send(http, "chatRetry", "hello", "same-id")
    again = await send(http, "chatRetry", "hello", "same-id")

    assert_well_formed(again)
    assert again.first("start")["messageId"] == first.first("start")["messageId"]
    assert again.text() == "only once"
    assert len(fake_groq.requests) == 1
    events = await stored(http, "chatRetry", 2)
    assert [e["type"] for e in events] == ["user.message", "assistant.message"]


async def test_a_client_abort_only_disconnects_the_answer_finishes_and_is_stored(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply("half ", after=["and the rest"], gate=gate))
    body = chat_body("chatLeave", user_message("hi", "l1"))
    async with http.stream("POST", "/api/chat", json=body) as response:
        await read_ui_stream(response, until="text-delta")
    session_id = derived_session_id("chatLeave", None)
    await _wait_detached(server, session_id)
    gate.open()

    async def answered() -> bool:
        return any(e["type"] == "assistant.message" for e in await get_events(http, session_id))

    await wait_until(answered, what="the answer to be stored")
    events = await get_events(http, session_id)
    assert events[-1]["status"] == "completed"
    assert events[-1]["text"] == "half and the rest"


async def test_resume_replays_the_running_answer_from_its_start_then_live(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    assert (await http.get("/api/chat/chatResume/stream")).status_code == 204
    gate = Gate()
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})),
        gated_reply("Ada ", "is ", after=["user 123."], gate=gate),
    )
    body = chat_body("chatResume", user_message(SEED, "r1"))
    async with http.stream("POST", "/api/chat", json=body) as response:
        before = await read_ui_stream(response, until="text-delta")
    await _wait_detached(server, derived_session_id("chatResume", None))

    async with http.stream("GET", "/api/chat/chatResume/stream") as response:
        replay = UIStream()
        reading = asyncio.ensure_future(_read_into(response, replay))
        await wait_until(lambda: _has(replay, "text-delta"), what="the replay")
        gate.open()
        await reading

    assert_well_formed(replay)
    assert replay.first("start") == before.first("start")  # the same message, created once
    assert replay.text() == "Ada is user 123."
    assert replay.types().count("tool-input-available") == 1
    assert (await http.get("/api/chat/chatResume/stream")).status_code == 204


async def test_a_second_reader_follows_the_answer_while_the_first_still_reads(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    """Two tabs, or a reload the server has not seen leave yet: both get the whole answer."""
    gate = Gate()
    fake_groq.script(gated_reply("one ", after=["for ", "both"], gate=gate))
    body = chat_body("chatTwoTabs", user_message("hi", "t1"))
    first, second = UIStream(), UIStream()
    async with http.stream("POST", "/api/chat", json=body) as response:
        reading_first = asyncio.ensure_future(_read_into(response, first))
        await wait_until(lambda: _has(first, "text-delta"), what="the first reader's delta")
        async with http.stream("GET", "/api/chat/chatTwoTabs/stream") as resumed:
            reading_second = asyncio.ensure_future(_read_into(resumed, second))
            await wait_until(lambda: _has(second, "text-delta"), what="the second's replay")
            gate.open()
            await asyncio.gather(reading_first, reading_second)

    for stream in (first, second):
        assert_well_formed(stream)
        assert stream.text() == "one for both"
    assert second.first("start") == first.first("start")


async def test_stop_cancels_the_running_answer_and_readers_get_abort(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply("partial ", after=["never"], gate=gate))
    assert (await http.post("/api/chat/chatStop/stop")).json() == {"stopped": False}
    body = chat_body("chatStop", user_message("hi", "s1"))
    async with http.stream("POST", "/api/chat", json=body) as response:
        stream = UIStream()
        reading = asyncio.ensure_future(_read_into(response, stream))
        await wait_until(lambda: _has(stream, "text-delta"), what="the first delta")
        assert (await http.post("/api/chat/chatStop/stop")).json() == {"stopped": True}
        await reading

    assert_well_formed(stream)
    assert stream.types()[-2:] == ["message-metadata", "abort"]
    assert stream.first("message-metadata")["messageMetadata"]["status"] == "cancelled"
    await asyncio.to_thread(fake_groq.wait_for_disconnect)  # the upstream request was closed
    events = await stored(http, "chatStop", 2)
    assert events[-1]["status"] == "cancelled"
    assert events[-1]["text"] == "partial "


async def test_an_upstream_failure_ends_in_an_error_part_and_a_stored_failed_response(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(error_reply(500, code="internal_server_error", message="upstream broke"))
    stream = await send(http, "chatFail", "hi", "f1")

    assert_well_formed(stream)
    assert stream.types()[-4:] == ["finish-step", "message-metadata", "error", "finish"]
    assert stream.first("message-metadata")["messageMetadata"]["status"] == "failed"
    assert stream.first("finish")["finishReason"] == "error"
    events = await stored(http, "chatFail", 2)
    assert events[-1]["status"] == "failed"


async def test_deleting_the_chat_mid_answer_ends_its_stream_with_error_and_abort(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply("going ", after=["never"], gate=gate))
    body = chat_body("chatGone", user_message("hi", "g1"))
    async with http.stream("POST", "/api/chat", json=body) as response:
        stream = UIStream()
        reading = asyncio.ensure_future(_read_into(response, stream))
        await wait_until(lambda: _has(stream, "text-delta"), what="the first delta")
        session_id = derived_session_id("chatGone", None)
        assert (await http.delete(f"/api/sessions/{session_id}")).status_code == 204
        await reading

    assert_well_formed(stream)
    assert stream.types()[-2:] == ["error", "abort"]
    assert stream.first("error")["errorText"] == "this session was deleted"
    assert (await http.get("/api/chat/chatGone/messages")).json() == []


async def test_a_message_while_an_answer_runs_is_refused_with_409(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply("busy ", after=["done"], gate=gate))
    body = chat_body("chatBusy", user_message("first", "b1"))
    async with http.stream("POST", "/api/chat", json=body) as response:
        stream = UIStream()
        reading = asyncio.ensure_future(_read_into(response, stream))
        await wait_until(lambda: _has(stream, "text-delta"), what="the first delta")
        second = await http.post("/api/chat", json=chat_body("chatBusy", user_message("2", "b2")))
        gate.open()
        await reading
    assert second.status_code == 409
    assert second.json()["code"] in ("session_busy", "response_in_progress")


async def test_a_message_over_the_owners_usage_limit_is_refused_with_429_and_no_model_call(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(owner_tokens_per_day=1)
    fake_groq.script(text_reply("the only answer today"))
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        assert (await send(http, "chatLimit", "first", "l1")).text() == "the only answer today"

        async def counted() -> bool:
            return bool((await http.get("/api/usage")).json()["tokens_today"]["used"] > 1)

        await wait_until(counted, what="the answer's tokens to be counted")
        refused = await http.post(
            "/api/chat", json=chat_body("chatLimit", user_message("one more", "l2"))
        )
        events = await get_events(http, derived_session_id("chatLimit", None))
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    assert refused.status_code == 429
    assert refused.json()["code"] == "usage_limit_exceeded"
    assert "resets at" in refused.json()["detail"]
    assert datetime.fromisoformat(refused.json()["resets_at"]) == datetime(
        tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC
    )
    assert len(fake_groq.requests) == 1  # the refused message never reached the model
    assert [e["type"] for e in events] == ["user.message", "assistant.message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"id": "x" * 65, "messages": [user_message("hi", "m")]}, 422),
        ({"id": "bad id!", "messages": [user_message("hi", "m")]}, 422),
        ({"id": "ok", "messages": []}, 400),
        ({"id": "ok", "messages": [{"id": "a", "role": "assistant", "parts": []}]}, 400),
        ({"id": "ok", "messages": [{"id": "m", "role": "user", "parts": [{"type": "file"}]}]}, 400),
        ({"id": "ok", "messages": [user_message("hi", "i" * 65)]}, 400),
        ({"id": "ok", "messages": [user_message("   ", "m")]}, 400),
        ({"id": "ok", "trigger": "regenerate-message"}, 400),
        ({"id": "ok", "messages": [user_message("hi", "m")], "trigger": "edit"}, 422),
    ],
)
async def test_bad_requests_get_a_clear_error_and_nothing_is_stored(
    http: httpx.AsyncClient, body: dict[str, Any], status: int
) -> None:
    response = await http.post("/api/chat", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert (await http.get("/api/sessions")).json()["sessions"] == []


async def test_a_chat_id_of_64_characters_is_accepted(
    http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("ok"))
    stream = await send(http, "A-z_9" * 12 + "abcd", "hi", "m")
    assert stream.text() == "ok"


async def test_chat_ids_are_scoped_to_their_owner(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(auth_mode="api_key", api_keys="alice-key,bob-key")
    fake_groq.script(text_reply("for alice"), text_reply("for bob"), text_reply("bob again"))
    alice = {"Authorization": "Bearer alice-key"}
    bob = {"Authorization": "Bearer bob-key"}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        assert (
            await http.post("/api/chat", json=chat_body("x", user_message("hi", "m")))
        ).status_code == 401
        streams = []
        for headers in (alice, bob):
            body = chat_body("shared", user_message("hi", "m1"))
            async with http.stream("POST", "/api/chat", json=body, headers=headers) as response:
                streams.append(await read_ui_stream(response))
        alice_session = streams[0].first("start")["messageMetadata"]["sessionId"]
        assert alice_session != streams[1].first("start")["messageMetadata"]["sessionId"]
        assert [s.text() for s in streams] == ["for alice", "for bob"]
        alice_messages = (await http.get("/api/chat/shared/messages", headers=alice)).json()
        assert [m["parts"][-1]["text"] for m in alice_messages] == ["hi", "for alice"]

        # Alice's session id is not a way into her chat for Bob: it is a new chat of his.
        body = chat_body(alice_session, user_message("let me in", "m2"))
        async with http.stream("POST", "/api/chat", json=body, headers=bob) as response:
            intruder = await read_ui_stream(response)
        assert intruder.first("start")["messageMetadata"]["sessionId"] != alice_session
        alice_after = (await http.get(f"/api/chat/{alice_session}/messages", headers=alice)).json()
        assert len(alice_after) == 2
        assert (await http.post(f"/api/chat/{alice_session}/stop", headers=bob)).json() == {
            "stopped": False
        }


async def stored(http: httpx.AsyncClient, chat_id: str, count: int) -> list[dict[str, Any]]:
    """The chat's stored events once there are `count` (writes land shortly after the stream);
    `chat_id` a chat's id, or a session id."""
    session_id = chat_id if len(chat_id) == 36 else derived_session_id(chat_id, None)
    seen: list[dict[str, Any]] = []

    async def landed() -> bool:
        seen[:] = await get_events(http, session_id)
        return len(seen) >= count

    await wait_until(landed, what=f"{count} stored events")
    return seen


async def _read_into(response: httpx.Response, stream: UIStream) -> None:
    await read_ui_stream(response, into=stream)


async def _has(stream: UIStream, chunk_type: str) -> bool:
    return chunk_type in stream.types()


async def _wait_detached(server: RunningServer, session_id: str) -> None:
    hub = server.app.state.runtime.hub

    async def detached() -> bool:
        return not hub.is_live(session_id)

    await wait_until(detached, what="the server to see the client leave")
