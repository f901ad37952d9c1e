"""The conversation over a real WebSocket: streaming, tools, acknowledgements, storage."""

from __future__ import annotations

import asyncio

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.support.client import types_of
from tests.support.server import RunningServer

PROFILE_QUESTION = "Can you fetch the profile for user 123?"


async def test_new_session_starts_with_ready(server: RunningServer) -> None:
    async with server.connect() as client:
        ready = await client.ready()
    assert ready["resumed"] is False
    assert ready["events"] == []
    assert ready["model"] == "test-model"
    assert len(ready["session_id"]) == 36


async def test_answer_streams_in_order_and_done_text_is_the_deltas(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("Hel", "lo", " there", "!"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("hi", message_id="m-1")
    assert types_of(frames) == [
        "user.message",
        "response.started",
        "response.delta",
        "response.delta",
        "response.delta",
        "response.delta",
        "response.done",
    ]
    ack, started, *deltas, done = frames
    assert ack == {**ack, "seq": 1, "id": "m-1", "text": "hi"}
    assert "created_at" in ack
    assert [delta["text"] for delta in deltas] == ["Hel", "lo", " there", "!"]
    assert {delta["response_id"] for delta in deltas} == {started["response_id"]}
    assert done["response_id"] == started["response_id"]
    assert done["text"] == "Hello there!"
    assert done["status"] == "completed"
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == 4
    assert done["seq"] == 2
    assert "error" not in done or done["error"] is None


async def test_server_makes_an_id_when_the_client_gives_none(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("ok"))
    async with server.connect() as client:
        await client.ready()
        ack = (await client.ask("hi"))[0]
    assert isinstance(ack["id"], str)
    assert ack["id"]


async def test_reasoning_is_never_answer_text(server: RunningServer, fake_groq: FakeGroq) -> None:
    fake_groq.script(text_reply("Forty", "-two", reasoning=["let me think", " hard"]))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("what is six times seven?")
    deltas = [frame["text"] for frame in frames if frame["type"] == "response.delta"]
    assert deltas == ["Forty", "-two"]
    assert frames[-1]["text"] == "Forty-two"


async def test_seed_example_calls_the_profile_tool_and_answers(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})),
        text_reply("User 123 is ", "Ada Lovelace."),
    )
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask(PROFILE_QUESTION)
    assert types_of(frames) == [
        "user.message",
        "response.started",
        "tool.call",
        "tool.result",
        "response.delta",
        "response.delta",
        "response.done",
    ]
    call, result = frames[2], frames[3]
    assert call["name"] == "fetch_user_profile"
    assert call["arguments"] == {"user_id": "123"}
    assert call["seq"] == 2
    assert result["call_id"] == call["call_id"]
    assert result["ok"] is True
    assert result["result"]["name"] == "Ada Lovelace"
    assert "error" not in result
    assert result["seq"] == 3
    assert frames[-1]["seq"] == 4
    # The second request carries the tool result back to the model.
    second = fake_groq.requests[1].body["messages"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "fetch_user_profile"
    assert second[-1]["role"] == "tool"
    assert second[-1]["tool_call_id"] == call["call_id"]
    assert "Ada Lovelace" in second[-1]["content"]


async def test_request_carries_system_prompt_history_and_tools(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(system_prompt="Be brief.")
    fake_groq.script(text_reply("one"), text_reply("two"))
    async with server.connect() as client:
        await client.ready()
        await client.ask("first")
        await client.ask("second")
    body = fake_groq.requests[1].body
    assert body["model"] == "test-model"
    assert body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Be brief."
    assert body["messages"][2]["content"] == "one"
    names = {tool["function"]["name"] for tool in body["tools"]}
    assert {"fetch_user_profile", "get_current_time", "calculate"} <= names


async def test_events_are_stored_with_gapless_seq_and_no_token_rows(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"}), text_before=["Looking"]),
        text_reply("a", "b", "c", "d", "e"),
        text_reply("f", "g"),
    )
    async with server.connect() as client:
        ready = await client.ready()
        await client.ask("one")
        await client.ask("two")
    await asyncio.sleep(0)  # the writer flushes on close; the rows are read below
    async with server.connect(f"session_id={ready['session_id']}") as client:
        events = (await client.ready())["events"]
    with server.db() as db:
        rows = db.execute(
            "select seq, type from session_events where session_id = ? order by seq",
            (ready["session_id"],),
        ).fetchall()
    assert [row["seq"] for row in rows] == list(range(1, len(rows) + 1))
    assert [row["type"] for row in rows] == [
        "user.message",
        "tool.call",
        "tool.result",
        "assistant.message",
        "user.message",
        "assistant.message",
    ]
    assert [event["seq"] for event in events] == [row["seq"] for row in rows]
    assert events[3]["text"] == "Lookingabcde"
    assert events[3]["model"] == "test-model"
