"""The real `ai` package from npm (its `Chat`, both of its transports, `readUIMessageStream`)
against a real server: what a `useChat` front-end sees, and what the server stored."""

from __future__ import annotations

import secrets
from itertools import groupby
from typing import Any

import httpx
import pytest

from tests.conftest import StartServer
from tests.fakes.groq_server import (
    FakeGroq,
    Gate,
    error_reply,
    gated_reply,
    text_reply,
    tool_call_reply,
)
from tests.support.ai_sdk_client import ClientRun, NodeChatClient, Transport
from tests.support.rest import get_events
from tests.support.waiting import wait_until

Json = dict[str, Any]

PROFILE_QUESTION = "Can you fetch the profile for user 123?"
PROFILE_ANSWER = ("User 123 is ", "Ada Lovelace, ", "on the pro plan.")
BEFORE = ("The first half, ",)
AFTER = ("then the second ", "half.")
WHOLE = "".join(BEFORE + AFTER)


def new_chat_id() -> str:
    """An id as useChat makes them: short, random, not a UUID."""
    return f"chat-{secrets.token_hex(6)}"


def chunks_of(run: ClientRun, chat: int = 0, request: int = 0) -> list[Json]:
    chunks: list[Json] = run.chats[chat]["requests"][request]["chunks"]
    return chunks


def start_of(chunks: list[Json]) -> Json:
    starts = [chunk for chunk in chunks if chunk["type"] == "start"]
    assert len(starts) == 1, f"one start chunk expected: {chunks}"
    return starts[0]


def compact_types(chunks: list[Json]) -> list[str]:
    """Chunk types in order, a run of text deltas as one."""
    return [kind for kind, _ in groupby(chunk["type"] for chunk in chunks)]


def assistants(messages: list[Json]) -> list[Json]:
    return [message for message in messages if message["role"] == "assistant"]


def text_of(message: Json) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


def session_of(run: ClientRun) -> str:
    """The session behind the chat, as the start chunk's metadata names it."""
    session_id: str = start_of(chunks_of(run))["messageMetadata"]["sessionId"]
    return session_id


async def stored_answers(http: httpx.AsyncClient, session_id: str) -> list[Json]:
    return [e for e in await get_events(http, session_id) if e["type"] == "assistant.message"]


async def wait_for_stored(http: httpx.AsyncClient, session_id: str, status: str) -> Json:
    """The session's last stored answer once it has `status`."""
    seen: list[Json] = []

    async def stored() -> bool:
        seen[:] = await stored_answers(http, session_id)
        return bool(seen) and seen[-1]["status"] == status

    await wait_until(stored, what=f"a stored answer with status {status}")
    return seen[-1]


async def chat_messages(http: httpx.AsyncClient, chat_id: str) -> list[Json]:
    response = await http.get(f"/api/chat/{chat_id}/messages")
    assert response.status_code == 200, response.text
    messages: list[Json] = response.json()
    return messages


# --------------------------------------------------------------------------- the seed example


async def test_the_seed_example_gives_a_tool_part_with_output_and_a_text_part(
    node_client: NodeChatClient, fake_groq: FakeGroq, http: httpx.AsyncClient
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})), text_reply(*PROFILE_ANSWER)
    )
    chat_id = new_chat_id()
    run = await node_client.run("send", chat_id, text=PROFILE_QUESTION)
    run.assert_clean()
    user, answer = run.chats[0]["messages"]
    assert user["parts"] == [{"type": "text", "text": PROFILE_QUESTION}]
    tool_part = next(p for p in answer["parts"] if p["type"] == "tool-fetch_user_profile")
    assert tool_part["state"] == "output-available"
    assert tool_part["input"] == {"user_id": "123"}
    assert tool_part["output"]["name"] == "Ada Lovelace"
    assert text_of(answer) == "".join(PROFILE_ANSWER)
    assert answer["id"].startswith("resp_")
    # The chat merges the start and finish metadata: the model and the usage.
    assert answer["metadata"]["model"] == "test-model"
    assert answer["metadata"]["usage"]["total_tokens"] > 0
    # readUIMessageStream makes the same message of the chunks as the chat did.
    assert run.chats[0]["requests"][0]["message"]["parts"] == answer["parts"]
    assert compact_types(chunks_of(run)) == [
        *("start", "start-step", "tool-input-available", "tool-output-available"),
        *("finish-step", "start-step", "text-start", "text-delta", "text-end"),
        *("finish-step", "finish"),
    ]
    stored = await wait_for_stored(http, session_of(run), "completed")
    assert stored["response_id"] == answer["id"]
    assert stored["text"] == "".join(PROFILE_ANSWER)
    # After a reload, useChat's initial messages show exactly what the stream showed.
    loaded_user, loaded_answer = await chat_messages(http, chat_id)
    assert (loaded_user["id"], loaded_user["parts"]) == (user["id"], user["parts"])
    assert (loaded_answer["id"], loaded_answer["parts"]) == (answer["id"], answer["parts"])


# --------------------------------------------------------------------------- regenerate


# A regenerate button on a message passes its id; a bare `regenerate()` of useChat passes none.
@pytest.mark.parametrize("names_the_message", [True, False], ids=["message-id", "no-message-id"])
async def test_regenerate_replaces_the_last_answer_everywhere(
    node_client: NodeChatClient,
    fake_groq: FakeGroq,
    http: httpx.AsyncClient,
    names_the_message: bool,
) -> None:
    fake_groq.script(text_reply("The first ", "answer."), text_reply("A better ", "answer."))
    chat_id = new_chat_id()
    first = await node_client.run("send", chat_id, text="Tell me something.")
    first.assert_clean()
    old_id = assistants(first.chats[0]["messages"])[0]["id"]

    extra = [] if names_the_message else ["--no-message-id"]
    run = await node_client.run("regenerate", chat_id, *extra)
    run.assert_clean()
    request = run.chats[0]["requests"][0]
    sent_id = old_id if names_the_message else None
    assert (request["trigger"], request["messageId"]) == ("regenerate-message", sent_id)
    [answer] = assistants(run.chats[0]["messages"])
    assert answer["id"] != old_id
    assert start_of(request["chunks"])["messageId"] == answer["id"]
    assert text_of(answer) == "A better answer."
    loaded = await chat_messages(http, chat_id)
    assert [m["id"] for m in assistants(loaded)] == [answer["id"]]
    assert text_of(assistants(loaded)[0]) == "A better answer."
    # The model was not shown the answer it is replacing.
    second_request = fake_groq.requests[1].body["messages"]
    assert all("The first answer." not in str(m.get("content")) for m in second_request)
    stored = await wait_for_stored(http, session_of(first), "completed")
    assert stored["response_id"] == answer["id"]
    assert stored.get("supersedes") == old_id


# --------------------------------------------------------------------------- stop


async def test_stop_cancels_the_answer_and_keeps_the_partial_text(
    node_client: NodeChatClient,
    transport: Transport,
    fake_groq: FakeGroq,
    http: httpx.AsyncClient,
) -> None:
    # HTTP: useChat's stop() only aborts the fetch, so the front-end also calls the stop route;
    # WebSocket: stop() sends an abort frame, which cancels by itself.
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate))
    chat_id = new_chat_id()
    extra = ["--stop-endpoint"] if transport == "http" else []
    try:
        run = await node_client.run("stop", chat_id, *extra, text="Talk for a while.")
    finally:
        gate.open()
    run.assert_clean()
    if transport == "http":
        assert run.result["stop"] == {"status": 200, "body": {"stopped": True}}
    [partial] = assistants(run.chats[0]["messages"])
    assert text_of(partial) == "".join(BEFORE)
    stored = await wait_for_stored(http, session_of(run), "cancelled")
    assert stored["text"] == "".join(BEFORE)
    assert stored["response_id"] == partial["id"]


@pytest.mark.parametrize("transport", ["http"], indirect=True)
async def test_an_http_abort_without_stop_is_a_disconnect_and_the_answer_completes(
    node_client: NodeChatClient, fake_groq: FakeGroq, http: httpx.AsyncClient
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate))
    try:
        run = await node_client.run("stop", new_chat_id(), text="Talk for a while.")
    finally:
        gate.open()
    run.assert_clean()
    assert run.marks == ["aborted"]
    stored = await wait_for_stored(http, session_of(run), "completed")
    assert stored["text"] == WHOLE


# --------------------------------------------------------------------------- resume


async def test_a_fresh_transport_resumes_mid_answer_and_shows_the_whole_answer_once(
    node_client: NodeChatClient, fake_groq: FakeGroq, http: httpx.AsyncClient
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate))
    try:
        run = await node_client.run(
            "resume", new_chat_id(), text="Talk for a while.", on_mark={"reconnected": gate.open}
        )
    finally:
        gate.open()
    run.assert_clean()
    assert run.marks == ["dropped", "reconnected"]
    original_start = start_of(chunks_of(run))
    original_id = original_start["messageId"]
    resumed = run.chats[1]["requests"][0]
    assert (resumed["trigger"], resumed["reconnected"]) == ("resume-stream", True)
    # The ai docs (WebSocketChatTransport): "Retain and replay the original UI `start` chunk";
    # the chat takes the message's id and metadata (createdAt) from it.
    assert start_of(resumed["chunks"]) == original_start
    deltas = [chunk["delta"] for chunk in resumed["chunks"] if chunk["type"] == "text-delta"]
    assert "".join(deltas) == WHOLE
    assert resumed["chunks"][-1]["type"] == "finish"
    [answer] = assistants(run.chats[1]["messages"])
    assert (answer["id"], text_of(answer)) == (original_id, WHOLE)
    stored = await wait_for_stored(http, session_of(run), "completed")
    assert (stored["response_id"], stored["text"]) == (original_id, WHOLE)


async def test_resuming_when_nothing_runs_answers_null(
    node_client: NodeChatClient, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("Done."))
    chat_id = new_chat_id()
    (await node_client.run("send", chat_id, text="Hi.")).assert_clean()
    run = await node_client.run("reconnect", chat_id)
    run.assert_clean()
    [request] = run.chats[0]["requests"]
    assert (request["trigger"], request["reconnected"], request["chunks"]) == (
        "resume-stream",
        False,
        [],
    )
    assert [m["role"] for m in run.chats[0]["messages"]] == ["user", "assistant"]
    assert run.chats[0]["status"] == "ready"


# --------------------------------------------------------------------------- upstream errors


@pytest.mark.parametrize("mode", ["chat", "stream"])
async def test_an_upstream_error_ends_in_an_error_chunk_and_a_failed_answer(
    node_client: NodeChatClient, fake_groq: FakeGroq, http: httpx.AsyncClient, mode: str
) -> None:
    # `chat` stops reading at the error chunk, as useChat does; `stream` reads every chunk.
    fake_groq.script(error_reply(500, code="internal_server_error", message="fake groq: down"))
    run = await node_client.run("send", new_chat_id(), "--mode", mode, text="Hello?")
    run.assert_clean()
    chunks = chunks_of(run)
    errors = [chunk for chunk in chunks if chunk["type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["errorText"]
    if mode == "chat":
        assert chunks[-1]["type"] == "error"
        assert run.chats[0]["status"] == "error"
        assert run.chats[0]["error"] == errors[0]["errorText"]
    else:
        assert [chunk["type"] for chunk in chunks[chunks.index(errors[0]) :]] == ["error", "finish"]
        assert chunks[-1]["finishReason"] == "error"
        assert run.result["streamRead"]["errors"] == [errors[0]["errorText"]]
    stored = await wait_for_stored(http, session_of(run), "failed")
    assert stored["response_id"] == start_of(chunks)["messageId"]


async def test_regenerate_after_a_failed_answer_retries_it(
    node_client: NodeChatClient, fake_groq: FakeGroq, http: httpx.AsyncClient
) -> None:
    # A front-end's "retry" after useChat's error: regenerate the failed answer, loaded again.
    fake_groq.script(
        error_reply(500, code="internal_server_error", message="fake groq: down"),
        text_reply("Back again."),
    )
    chat_id = new_chat_id()
    failed = await node_client.run("send", chat_id, text="Hello?")
    failed.assert_clean()
    failed_id = start_of(chunks_of(failed))["messageId"]
    run = await node_client.run("regenerate", chat_id)
    run.assert_clean()
    [answer] = assistants(run.chats[0]["messages"])
    assert answer["id"] != failed_id
    assert text_of(answer) == "Back again."
    loaded = await chat_messages(http, chat_id)
    assert [m["role"] for m in loaded] == ["user", "assistant"]
    assert loaded[1]["id"] == answer["id"]


# --------------------------------------------------------------------------- auth


@pytest.mark.usefixtures("node_ready")
async def test_with_auth_on_the_token_goes_as_each_transport_sends_it(
    start_server: StartServer, fake_groq: FakeGroq, transport: Transport
) -> None:
    # HTTP: an Authorization header (the transport's `headers`); WebSocket: `?token=` (its
    # `params`), as a browser's WebSocket cannot send headers.
    server = start_server(auth_mode="api_key", api_keys="the-key")
    fake_groq.script(text_reply("Authorized."))
    chat_id = new_chat_id()
    with_key = NodeChatClient(server.http_url, transport, env={"AI_CLIENT_TOKEN": "the-key"})
    run = await with_key.run("send", chat_id, text="Hi.")
    run.assert_clean()
    assert text_of(assistants(run.chats[0]["messages"])[0]) == "Authorized."

    refused = await NodeChatClient(server.http_url, transport).run("send", chat_id, text="Hi.")
    assert refused.returncode == 1
    assert refused.chats[0]["status"] == "error"
    assert refused.chats[0]["requests"][0]["chunks"] == []
    # What useChat's `error` shows: the 401 body; on the WebSocket, the refusal the server
    # answers the transport's first request with before it closes with 4401.
    assert "a token is required" in refused.chats[0]["error"]
