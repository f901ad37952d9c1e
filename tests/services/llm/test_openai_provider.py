"""The OpenAI-compatible provider, driven through the real `openai` SDK against a fake server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import orjson
import pytest

from app.services.llm.base import (
    ChatMessage,
    Finished,
    LLMError,
    LLMErrorKind,
    LLMEvent,
    ModelRequest,
    TextDelta,
    ToolCallRequest,
    ToolDefinition,
    UserPart,
)
from app.services.llm.openai import PLACEHOLDER_API_KEY, OpenAIProvider
from tests.conftest import BACKGROUND_SUMMARY, BACKGROUND_SUMMARY_MODEL, StartServer
from tests.fakes.groq_server import (
    Reply,
    ToolCallSpec,
    cut_reply,
    error_reply,
    stream_error_reply,
    text_reply,
)
from tests.fakes.openai_server import FakeOpenAI, fragmented_tool_call_reply
from tests.support.client import types_of

MESSAGES: list[ChatMessage] = [ModelRequest([UserPart("hello")])]
TOOLS: list[ToolDefinition] = [
    {
        "type": "function",
        "function": {
            "name": "fetch_user_profile",
            "description": "A user's profile.",
            "parameters": {"type": "object", "properties": {"user_id": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        fake.answer_model(BACKGROUND_SUMMARY_MODEL, text_reply(BACKGROUND_SUMMARY))
        yield fake
        fake.assert_complete()


@pytest.fixture
async def provider(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(
        base_url=fake_openai.base_url,
        api_key=None,
        model="served-model",
        timeout_s=2.0,
        max_retries=0,
        max_completion_tokens=256,
    )
    yield provider
    await provider.aclose()


async def _events(provider: OpenAIProvider, tools: list[ToolDefinition] = TOOLS) -> list[LLMEvent]:
    async with aclosing(provider.stream(MESSAGES, tools=tools)) as stream:
        return [event async for event in stream]


async def test_text_streams_and_the_request_is_openai_shaped(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(text_reply("Hel", "lo"))
    events = await _events(provider)
    assert events[:2] == [TextDelta("Hel"), TextDelta("lo")]
    assert isinstance(events[-1], Finished)
    assert events[-1].model == "served-model"
    assert events[-1].finish_reason == "stop"
    request = fake_openai.requests[0]
    assert request.path == "/openai/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"
    assert request.body["model"] == "served-model"
    assert request.body["stream"] is True
    assert request.body["max_completion_tokens"] == 256
    assert request.body["tools"] == TOOLS


async def test_tool_arguments_sent_in_fragments_are_assembled(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        fragmented_tool_call_reply(
            ToolCallSpec("fetch_user_profile", {"user_id": "123"}, id="call_a"),
            ToolCallSpec("fetch_user_profile", {"user_id": "456", "note": "x" * 40}, id="call_b"),
            text_before=["Let me look."],
        )
    )
    events = await _events(provider)
    calls = [event for event in events if isinstance(event, ToolCallRequest)]
    assert [call.call_id for call in calls] == ["call_a", "call_b"]
    assert [call.name for call in calls] == ["fetch_user_profile"] * 2
    assert orjson.loads(calls[0].arguments) == {"user_id": "123"}
    assert orjson.loads(calls[1].arguments) == {"user_id": "456", "note": "x" * 40}
    assert events[0] == TextDelta("Let me look.")
    assert isinstance(events[-1], Finished)
    assert events[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("reply", "kind", "status", "upstream_code"),
    [
        (
            error_reply(404, code="model_not_found", message="no"),
            LLMErrorKind.MODEL_NOT_FOUND,
            404,
            "model_not_found",
        ),
        (
            error_reply(429, code="rate_limit_exceeded", message="slow"),
            LLMErrorKind.RATE_LIMITED,
            429,
            None,
        ),
        (
            error_reply(500, code="oops", message="boom", type_="server_error"),
            LLMErrorKind.UNAVAILABLE,
            500,
            None,
        ),
        (
            error_reply(401, code="invalid_api_key", message="no"),
            LLMErrorKind.UNAUTHORIZED,
            401,
            None,
        ),
        (stream_error_reply("a", status_code=503), LLMErrorKind.UNAVAILABLE, 503, None),
        (cut_reply("a"), LLMErrorKind.UNAVAILABLE, None, None),
    ],
)
async def test_errors_are_translated_once(
    provider: OpenAIProvider,
    fake_openai: FakeOpenAI,
    reply: Reply,
    kind: LLMErrorKind,
    status: int | None,
    upstream_code: str | None,
) -> None:
    fake_openai.script(reply)
    with pytest.raises(LLMError) as caught:
        await _events(provider)
    assert caught.value.kind is kind
    assert caught.value.upstream_status == status
    if upstream_code is not None:
        assert caught.value.upstream_code == upstream_code


async def test_unreachable_server_names_the_setting(fake_openai: FakeOpenAI) -> None:
    provider = OpenAIProvider(
        base_url="http://127.0.0.1:9/v1",
        api_key="key",
        model="m",
        timeout_s=2.0,
        max_retries=0,
        max_completion_tokens=64,
    )
    try:
        with pytest.raises(LLMError) as caught:
            await _events(provider)
    finally:
        await provider.aclose()
    assert caught.value.kind is LLMErrorKind.UNAVAILABLE
    assert "OPENAI_BASE_URL" in caught.value.message


async def test_a_conversation_with_a_tool_through_the_websocket(
    start_server: StartServer, fake_openai: FakeOpenAI
) -> None:
    server = start_server(
        llm_provider="openai",
        openai_base_url=fake_openai.base_url,
        openai_api_key="sk-test",
        openai_model="served-model",
    )
    fake_openai.script(
        fragmented_tool_call_reply(("fetch_user_profile", {"user_id": "123"})),
        text_reply("User 123 ", "is Ada."),
    )
    async with server.connect() as client:
        ready = await client.ready()
        frames = await client.ask("Can you fetch the profile for user 123?")
    assert ready["model"] == "served-model"
    assert types_of(frames) == [
        "user.message",
        "response.started",
        "tool.call",
        "tool.result",
        "response.delta",
        "response.delta",
        "response.done",
    ]
    assert frames[2]["arguments"] == {"user_id": "123"}
    assert frames[3]["ok"] is True
    assert frames[-1]["model"] == "served-model"
    assert fake_openai.requests[0].headers["authorization"] == "Bearer sk-test"
