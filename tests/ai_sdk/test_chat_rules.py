"""The AI SDK's own moves that the stored history has to make sense of: a stop before the answer
began, a "retry" (regenerate) of a message that was refused, a regenerate naming the user
message, an edit, and files."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.services.ai_sdk.chat_ids import derived_session_id
from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.rest import get_events
from tests.support.server import RunningServer
from tests.support.stall import stalled
from tests.support.ui_stream import (
    UIStream,
    assert_well_formed,
    chat_body,
    read_ui_stream,
    user_message,
)
from tests.support.waiting import wait_until


async def post(http: httpx.AsyncClient, body: dict[str, Any]) -> UIStream:
    async with http.stream("POST", "/api/chat", json=body) as response:
        return await read_ui_stream(response)


def regenerate(chat_id: str, *messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": chat_id, "messages": list(messages), "trigger": "regenerate-message", **extra}


async def test_a_stop_before_the_answer_began_cancels_it_with_no_model_call(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(store_commit_timeout_s=30)
    hub = server.app.state.runtime.hub
    session_id = derived_session_id("early", None)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
        with stalled(server):  # the message cannot be stored yet: the answer has not begun
            sending = asyncio.ensure_future(
                post(http, chat_body("early", user_message("hi", "e1")))
            )

            async def storing() -> bool:
                return bool(hub.is_live(session_id))

            await wait_until(storing, what="the message to be on its way to the store")
            stopped = (await http.post("/api/chat/early/stop")).json()
        stream = await sending

        async def stored() -> bool:
            return len(await get_events(http, session_id)) == 2

        await wait_until(stored, what="the cancelled answer to be stored")
        events = await get_events(http, session_id)

    assert stopped == {"stopped": True}
    assert_well_formed(stream)
    assert stream.types()[-2:] == ["message-metadata", "abort"]
    assert [e["type"] for e in events] == ["user.message", "assistant.message"]
    assert events[1]["status"] == "cancelled"
    assert fake_groq.requests == []  # no model call at all


async def test_retry_of_a_refused_message_sends_it_and_replaces_nothing(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("answer one"), text_reply("answer two"))
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        first = await post(http, chat_body("retry", user_message("question one", "q1")))
        # useChat's messages after a refused turn: the first exchange and the unsent message.
        answer_one = {"id": first.first("start")["messageId"], "role": "assistant", "parts": []}
        unsent = user_message("question two", "q2")
        with stalled(server):  # the store does not take the second message: it is refused
            refused = await http.post("/api/chat", json=chat_body("retry", unsent))
        hub = server.app.state.runtime.hub

        async def idle() -> bool:
            return not hub.is_live(derived_session_id("retry", None))

        await wait_until(idle, 10, what="the chat to be free again")
        retried = await post(
            http, regenerate("retry", user_message("question one", "q1"), answer_one, unsent)
        )
        messages = (await http.get("/api/chat/retry/messages")).json()

    assert refused.status_code in (409, 503)  # busy or unavailable: nothing was stored
    assert retried.text() == "answer two"
    assert "supersedes" not in retried.first("finish")["messageMetadata"]
    assert [(m["role"], m["parts"][-1]["text"]) for m in messages] == [
        ("user", "question one"),
        ("assistant", "answer one"),
        ("user", "question two"),
        ("assistant", "answer two"),
    ]


async def test_regenerate_may_name_the_user_message_its_answer_replied_to(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("first try"), text_reply("second try"))
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        first = await post(http, chat_body("byUser", user_message("q", "u1")))
        again = await post(http, regenerate("byUser", user_message("q", "u1"), messageId="u1"))
    assert again.text() == "second try"
    assert (
        again.first("finish")["messageMetadata"]["supersedes"] == first.first("start")["messageId"]
    )


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        (
            {
                "id": "f1",
                "role": "user",
                "parts": [
                    {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,AA=="},
                    {"type": "text", "text": "what is in this picture?"},
                ],
            },
            "only text parts are supported; this message has: file",
        ),
    ],
)
async def test_a_message_with_a_file_is_refused_even_with_text(
    server: RunningServer, message: dict[str, Any], detail: str
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        response = await http.post("/api/chat", json=chat_body("files", message))
    assert response.status_code == 400
    assert response.json()["detail"] == detail


async def test_an_edit_of_a_sent_message_is_refused_and_changes_nothing(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("4"))
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        await post(http, chat_body("edits", user_message("what is 2+2?", "e1")))
        edited = chat_body("edits", user_message("what is 3+3?", "e1"), messageId="e1")
        response = await http.post("/api/chat", json=edited)
        messages = (await http.get("/api/chat/edits/messages")).json()
    assert response.status_code == 400
    assert "cannot be edited" in response.json()["detail"]
    assert [m["parts"][-1]["text"] for m in messages] == ["what is 2+2?", "4"]
    assert len(fake_groq.requests) == 1
