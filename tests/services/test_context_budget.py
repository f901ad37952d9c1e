"""Long conversations: the context budget, the rolling summary, history repair, titles."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.protocol import StoredEvent, ToolCallEvent, UserMessageEvent
from app.services.context import (
    TRUNCATION_MARK,
    ContextBudget,
    RollingSummary,
    estimate_tokens,
    request_tokens,
    split_turns,
)
from app.services.llm.base import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    RequestPart,
    SystemPart,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolReturnPart,
    UserPart,
)
from tests.conftest import BACKGROUND_SUMMARY_MODEL, StartServer
from tests.fakes.groq_server import (
    FakeGroq,
    RecordedRequest,
    error_reply,
    text_reply,
    tool_call_reply,
)
from tests.support.rest import wait_for_session
from tests.support.server import RunningServer

ROLLING = "ROLLING-SUMMARY: the user counted turns."
BUDGET = 1500


def _chat_requests(fake: FakeGroq) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.body.get("model") == "test-model"]


def _as_sent(message: dict[str, Any]) -> ChatMessage:
    """A message of a request as the fake received it, read back as ours."""
    if message["role"] == "assistant":
        calls = [
            ToolCallPart(call["id"], call["function"]["name"], call["function"]["arguments"])
            for call in message.get("tool_calls") or []
        ]
        return ModelResponse([TextPart(message["content"] or ""), *calls])
    part: RequestPart
    if message["role"] == "tool":
        part = ToolReturnPart(message["tool_call_id"], "", message["content"])
    elif message["role"] == "system":
        part = SystemPart(message["content"])
    else:
        part = UserPart(message["content"])
    return ModelRequest([part])


def _sent_tokens(messages: list[dict[str, Any]], tools: list[ToolDefinition]) -> int:
    """`request_tokens` of a request as it was sent."""
    return request_tokens([_as_sent(message) for message in messages], tools)


def _assert_tool_pairs_whole(messages: list[dict[str, Any]]) -> None:
    """Every assistant tool call is answered right after it, and no result is orphaned."""
    expected: list[str] = []
    for message in messages:
        if message["role"] == "tool":
            assert expected, f"tool result without its call: {message}"
            assert message["tool_call_id"] == expected.pop(0)
            continue
        assert not expected, f"tool calls left without results before {message}"
        expected = [call["id"] for call in message.get("tool_calls") or []]
    assert not expected


def test_estimates_are_conservative_and_turns_split_at_user_messages() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("a" * 300) == 101
    assert estimate_tokens("€" * 100) == 101  # three bytes a character
    now = datetime.now(UTC)
    events: list[StoredEvent] = [
        UserMessageEvent(seq=1, created_at=now, id="a", text="hi"),
        ToolCallEvent(seq=2, created_at=now, response_id="r", call_id="c", name="x", arguments={}),
        UserMessageEvent(seq=3, created_at=now, id="b", text="again"),
    ]
    assert [[e.seq for e in turn] for turn in split_turns(events)] == [[1, 2], [3]]


async def test_two_hundred_turns_stay_within_budget_with_a_rolling_summary(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(
        context_max_tokens=BUDGET, summary_model="rolling-model", max_messages_per_minute=1000
    )
    fake_groq.answer_model("rolling-model", text_reply(ROLLING))
    for turn in range(200):
        if turn % 10 == 3:
            fake_groq.script(tool_call_reply(("calculate", {"expression": f"{turn}*2"})))
        fake_groq.script(text_reply(f"Answer number {turn}, ", "with some more words to fill it."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        for turn in range(200):
            done = (await client.ask(f"This is turn {turn}. Please answer with its number."))[-1]
            assert done["status"] == "completed", done
    requests = _chat_requests(fake_groq)
    assert len(requests) == 220
    tools = requests[0].body["tools"]
    sizes = [_sent_tokens(r.body["messages"], tools) for r in requests]
    assert max(sizes) <= BUDGET
    late = requests[-1].body["messages"]
    assert any(ROLLING in (m.get("content") or "") for m in late)
    assert "turn 199" in late[-1]["content"]
    for request in requests:
        _assert_tool_pairs_whole(request.body["messages"])
    with server.db() as db:
        row = db.execute(
            "select context_summary, context_summary_seq from sessions where id = ?", (session_id,)
        ).fetchone()
    assert row["context_summary"] == ROLLING
    assert row["context_summary_seq"] > 0


@pytest.mark.parametrize(
    "character", ["😀", "漢", "é", "a"], ids=["emoji", "cjk", "latin", "ascii"]
)
async def test_a_message_over_the_budget_keeps_the_part_that_fits_in_any_script(
    start_server: StartServer, fake_groq: FakeGroq, character: str
) -> None:
    server = start_server(context_max_tokens=BUDGET)
    fake_groq.script(text_reply("read it"))
    text = character * 6000  # 6,000 to 24,000 bytes: two to eight times the budget
    async with server.connect() as client:
        await client.ready()
        assert (await client.ask(text))[-1]["status"] == "completed"
    request = _chat_requests(fake_groq)[-1]
    kept = request.body["messages"][-1]["content"].partition("\n[... ")[0]
    assert _sent_tokens(request.body["messages"], request.body["tools"]) <= BUDGET
    assert text.startswith(kept)
    # Most of the budget goes to the message: what the system prompt and tools leave of it.
    assert len(kept.encode()) > (BUDGET // 2) * 3


_MARK = re.compile(re.escape(TRUNCATION_MARK).replace(r"\{count\}", r"(\d+)") + r"\Z")


async def _never_fold(summary: str | None, events: Sequence[StoredEvent]) -> str:
    raise AssertionError("one turn is never folded")


def _request_with(text: str) -> list[ChatMessage]:
    return [ModelRequest([SystemPart("")]), ModelRequest([UserPart(text)])]


# Deterministic, and no example database written into the tree (as in the WebSocket fuzzing).
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(text=st.text(min_size=70, max_size=3000), data=st.data())
async def test_the_cut_keeps_the_longest_prefix_whose_bytes_fit(
    text: str, data: st.DataObject
) -> None:
    # The smallest budget leaves room for the mark; a request that fits is not cut.
    max_tokens = data.draw(st.integers(32, request_tokens(_request_with(text), []) - 1))
    budget = ContextBudget(max_tokens=max_tokens, system_prompt="", fold=_never_fold)
    event = UserMessageEvent(seq=1, created_at=datetime.now(UTC), id="m", text=text)
    messages, _ = await budget.fit([event], RollingSummary(text=None, upto_seq=0), [])
    [part] = messages[-1].parts
    assert isinstance(part, UserPart)
    content = part.content
    mark = _MARK.search(content)
    assert mark is not None, content
    kept = content[: mark.start()]
    assert text.startswith(kept)
    assert int(mark[1]) == len(text) - len(kept)
    assert request_tokens(messages, []) <= max_tokens
    if len(kept) < len(text):  # one more character would not fit
        longer = text[: len(kept) + 1] + TRUNCATION_MARK.format(count=len(text) - len(kept) - 1)
        assert request_tokens(_request_with(longer), []) > max_tokens


async def test_context_length_exceeded_folds_harder_and_retries_once(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(context_max_tokens=4000, summary_model="rolling-model")
    fake_groq.answer_model("rolling-model", text_reply(ROLLING))
    fake_groq.script(*[text_reply(f"reply {i}") for i in range(6)])
    fake_groq.script(
        error_reply(400, code="context_length_exceeded", message="too long"),
        text_reply("fits now"),
    )
    async with server.connect() as client:
        await client.ready()
        for i in range(6):
            await client.ask(f"message {i} " + "words " * 80)
        done = (await client.ask("last one"))[-1]
    assert done["status"] == "completed"
    assert done["text"] == "fits now"
    refused, retried = _chat_requests(fake_groq)[-2:]
    assert len(retried.raw_body) < len(refused.raw_body)
    assert any(ROLLING in (m.get("content") or "") for m in retried.body["messages"])


async def test_context_length_exceeded_twice_fails_cleanly(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server()
    refusal = error_reply(400, code="context_length_exceeded", message="too long")
    fake_groq.script(refusal, refusal, text_reply("ok"))
    async with server.connect() as client:
        await client.ready()
        done = (await client.ask("hello"))[-1]
        again = (await client.ask("hello again"))[-1]
    assert done["status"] == "failed"
    assert done["error"]["code"] == "llm_error"
    assert "context_length_exceeded" in done["error"]["message"]
    assert again["status"] == "completed"


def _add_dangling_call(server: RunningServer, session_id: str) -> None:
    """What a crash between a tool call and its result leaves in the store."""
    event = ToolCallEvent(
        seq=2,
        created_at=datetime.now(UTC),
        response_id="resp_crashed",
        call_id="call_dangling",
        name="fetch_user_profile",
        arguments={"user_id": "123"},
    )
    with sqlite3.connect(server.settings.sqlite_path()) as db:
        db.execute(
            "insert into session_events (session_id, seq, type, created_at, data) "
            "values (?, ?, ?, ?, ?)",
            (
                session_id,
                2,
                "tool.call",
                "2026-01-01T00:00:00.000000Z",
                orjson.dumps(event.model_dump(mode="json")).decode(),
            ),
        )


async def test_a_session_with_a_dangling_tool_call_resumes_and_answers(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    first = start_server()
    fake_groq.script(text_reply("hello"))
    async with first.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.send({"type": "user.message", "text": "fetch 123", "id": "m1"})
        await client.recv()
    first.stop()
    with sqlite3.connect(first.settings.sqlite_path()) as db:
        db.execute("delete from session_events where session_id = ? and seq > 1", (session_id,))
    _add_dangling_call(first, session_id)
    second = start_server()
    fake_groq.script(text_reply("yes, still here"))
    async with second.connect(f"session_id={session_id}") as client:
        events = (await client.ready())["events"]
        done = (await client.ask("are you still there?"))[-1]
    assert [e["type"] for e in events] == ["user.message", "tool.call"]
    assert done["status"] == "completed"
    messages = _chat_requests(fake_groq)[-1].body["messages"]
    _assert_tool_pairs_whole(messages)
    repaired = next(m for m in messages if m["role"] == "tool")
    assert repaired["tool_call_id"] == "call_dangling"
    assert "interrupted" in repaired["content"]


async def test_a_transcript_ten_times_the_summary_window_is_summarized_in_parts(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    window = 700
    server = start_server(summary_model="small-window-model", summary_window_tokens=window)
    fake_groq.answer_model("small-window-model", text_reply("Summary of everything."))
    fake_groq.script(*[text_reply("Noted. " * 30) for _ in range(40)])
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        for i in range(40):
            await client.ask(f"Fact {i}: " + "the quick brown fox jumps over it. " * 10)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        session = await wait_for_session(
            http, session_id, lambda s: s["summary_status"] in ("done", "failed")
        )
    assert session["summary_status"] == "done"
    assert session["summary"] == "Summary of everything."
    summary_requests = [
        r for r in fake_groq.background_requests if r.body.get("model") == "small-window-model"
    ]
    transcript = [f"Fact {i}: " + "x" * 350 + "Noted. " * 30 for i in range(40)]
    assert sum(map(estimate_tokens, transcript)) >= 10 * window
    end_summary = [r for r in summary_requests if "summarize chat sessions" in r.raw_body.decode()]
    assert len(end_summary) >= 10
    for request in summary_requests:
        assert _sent_tokens(request.body["messages"], []) <= window
    # Each later part builds on the summary so far.
    assert "Summary so far" in end_summary[-1].body["messages"][1]["content"]
    assert "Fact 39" in end_summary[-1].body["messages"][1]["content"]


async def test_the_first_exchange_gives_the_session_a_title(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("Ada Lovelace is user 123."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.ask("Who is user 123?")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            session = await wait_for_session(http, session_id, lambda s: s["title"] is not None)
    assert session["title"] == "A short summary"
    title_requests = [
        r
        for r in fake_groq.background_requests
        if r.body.get("model") == BACKGROUND_SUMMARY_MODEL and "title" in r.raw_body.decode()
    ]
    assert "Who is user 123?" in title_requests[0].body["messages"][1]["content"]
