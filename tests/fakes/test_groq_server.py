"""The fake Groq server, driven by the real ``groq.AsyncGroq`` SDK over a real socket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import groq
import httpx
import pytest
from groq.types.chat import ChatCompletionChunk

from .groq_server import (
    CHAT_COMPLETIONS_PATH,
    UNSCRIPTED_MESSAGE,
    FakeGroq,
    ToolCallSpec,
    Usage,
    cut_reply,
    error_reply,
    hold_reply,
    stall_reply,
    stream_error_reply,
    text_reply,
    tool_call_reply,
)

pytestmark = pytest.mark.timeout(10)

MODEL = "openai/gpt-oss-120b"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def fake() -> Iterator[FakeGroq]:
    """A running fake, stopped after the test."""
    with FakeGroq() as server:
        yield server


def make_client(
    fake: FakeGroq, *, max_retries: int = 0, timeout: float | httpx.Timeout = 5.0
) -> groq.AsyncGroq:
    """The real SDK client, pointed at the fake."""
    return groq.AsyncGroq(
        api_key="test", base_url=fake.base_url, max_retries=max_retries, timeout=timeout
    )


async def open_stream(
    client: groq.AsyncGroq, **extra: Any
) -> groq.AsyncStream[ChatCompletionChunk]:
    """Start a streamed chat completion."""
    stream: groq.AsyncStream[ChatCompletionChunk] = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, **extra
    )
    return stream


async def collect(client: groq.AsyncGroq, **extra: Any) -> list[ChatCompletionChunk]:
    """Every chunk of one streamed chat completion."""
    stream = await open_stream(client, **extra)
    async with stream:
        return [chunk async for chunk in stream]


async def take(chunks: AsyncIterator[ChatCompletionChunk], into: list[str], n: int) -> None:
    """Read ``n`` chunks, appending their content to ``into``."""
    for _ in range(n):
        chunk = await anext(chunks)
        into.append(chunk.choices[0].delta.content or "")


async def read_all(chunks: AsyncIterator[ChatCompletionChunk], into: list[str]) -> None:
    """Read chunks until the stream ends or fails, appending their content to ``into``."""
    async for chunk in chunks:
        into.append(chunk.choices[0].delta.content or "")


def contents(chunks: list[ChatCompletionChunk]) -> list[str]:
    """The non-empty content deltas."""
    return [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]


# --------------------------------------------------------------------------- text


@pytest.mark.asyncio
async def test_text_reply_streams_tokens_then_usage(fake: FakeGroq) -> None:
    fake.script(text_reply("Hel", "lo", "!", usage=Usage(prompt_tokens=7, completion_tokens=3)))
    async with make_client(fake) as client:
        chunks = await collect(client)

    first, last = chunks[0], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert first.x_groq is not None
    assert (first.x_groq.id or "").startswith("req_")
    assert contents(chunks) == ["Hel", "lo", "!"]
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.content is None
    assert last.usage is not None
    assert last.usage.total_tokens == 10
    assert last.x_groq is not None
    assert last.x_groq.usage is not None
    assert last.x_groq.usage.prompt_tokens == 7
    assert {c.id for c in chunks} == {first.id}
    assert first.id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {MODEL}
    assert all(c.object == "chat.completion.chunk" and c.system_fingerprint for c in chunks)
    fake.assert_complete()


@pytest.mark.asyncio
async def test_reasoning_arrives_in_reasoning_not_content(fake: FakeGroq) -> None:
    fake.script(text_reply("4", reasoning=["two plus ", "two"]))
    async with make_client(fake) as client:
        chunks = await collect(client)

    reasoning = [c.choices[0].delta.reasoning for c in chunks if c.choices[0].delta.reasoning]
    assert reasoning == ["two plus ", "two"]
    assert contents(chunks) == ["4"]
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 3


@pytest.mark.asyncio
async def test_keep_alive_serves_several_requests_on_one_connection(fake: FakeGroq) -> None:
    fake.script(text_reply("one"), text_reply("two"))
    async with make_client(fake) as client:
        first = contents(await collect(client))
        second = contents(await collect(client))

    assert (first, second) == (["one"], ["two"])
    assert fake.connections == 1
    fake.assert_complete()


# --------------------------------------------------------------------------- tool calls


@pytest.mark.asyncio
async def test_parallel_tool_calls_arrive_whole_one_per_chunk(fake: FakeGroq) -> None:
    fake.script(
        tool_call_reply(("get_weather", {"city": "Paris"}), ToolCallSpec("get_time", {"tz": "CET"}))
    )
    async with make_client(fake) as client:
        chunks = await collect(client, tools=[WEATHER_TOOL])

    assert chunks[0].choices[0].delta.content is None
    call_chunks = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    assert [len(calls) for calls in call_chunks] == [1, 1]
    calls = [calls[0] for calls in call_chunks]
    assert [call.index for call in calls] == [0, 1]
    assert all((call.id or "").startswith("call_") and call.type == "function" for call in calls)
    assert calls[0].id != calls[1].id
    functions = [call.function for call in calls if call.function is not None]
    assert [f.name for f in functions] == ["get_weather", "get_time"]
    assert [json.loads(f.arguments or "") for f in functions] == [{"city": "Paris"}, {"tz": "CET"}]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.asyncio
async def test_text_can_stream_before_a_tool_call(fake: FakeGroq) -> None:
    fake.script(
        tool_call_reply(("get_weather", {"city": "Oslo"}), text_before=["Let me ", "check."])
    )
    async with make_client(fake) as client:
        chunks = await collect(client)

    assert chunks[0].choices[0].delta.content == ""
    assert contents(chunks) == ["Let me ", "check."]
    assert sum(1 for c in chunks if c.choices[0].delta.tool_calls) == 1


@pytest.mark.asyncio
async def test_string_arguments_are_sent_verbatim(fake: FakeGroq) -> None:
    fake.script(tool_call_reply(("get_weather", '{"city": "Par')))
    async with make_client(fake) as client:
        chunks = await collect(client)

    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    function = calls[0][0].function
    assert function is not None
    assert function.arguments == '{"city": "Par'


@pytest.mark.asyncio
async def test_fragmented_arguments_arrive_openai_style(fake: FakeGroq) -> None:
    arguments = {"city": "Buenos Aires", "unit": "celsius"}
    fake.script(tool_call_reply(("get_weather", arguments), fragmented=True))
    async with make_client(fake) as client:
        chunks = await collect(client)

    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]
    head, fragments = deltas[0], deltas[1:]
    assert head.function is not None
    assert (head.function.name, head.function.arguments) == ("get_weather", "")
    assert (head.id or "").startswith("call_")
    assert head.type == "function"
    assert len(fragments) >= 2
    assert all(f.id is None and f.type is None and f.index == 0 for f in fragments)
    assert all(f.function is not None and f.function.name is None for f in fragments)
    joined = "".join(f.function.arguments or "" for f in fragments if f.function is not None)
    assert json.loads(joined) == arguments


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (400, "model_decommissioned", groq.BadRequestError),
        (401, "invalid_api_key", groq.AuthenticationError),
        (404, "model_not_found", groq.NotFoundError),
        (429, "rate_limit_exceeded", groq.RateLimitError),
        (500, "internal_server_error", groq.InternalServerError),
        (498, "capacity_exceeded", groq.APIStatusError),
    ],
)
async def test_error_reply_becomes_the_matching_sdk_error(
    fake: FakeGroq, status: int, code: str, error_class: type[groq.APIStatusError]
) -> None:
    fake.script(error_reply(status, code=code, message=f"boom {code}"))
    async with make_client(fake) as client:
        with pytest.raises(groq.APIStatusError) as caught:
            await open_stream(client)

    error = caught.value
    assert type(error) is error_class
    assert error.status_code == status
    assert isinstance(error.body, dict)
    assert error.body["error"]["code"] == code
    assert error.body["error"]["message"] == f"boom {code}"
    assert error.body["error"]["param"] is None
    assert error.response.headers["content-type"] == "application/json"
    assert error.response.headers["x-request-id"].startswith("req_")
    assert ("retry-after" in error.response.headers) == (status == 429)
    fake.assert_complete()


@pytest.mark.asyncio
async def test_tool_use_failed_carries_failed_generation(fake: FakeGroq) -> None:
    raw = '<function=get_weather{"city": "Paris"}</function>'
    fake.script(error_reply(400, code="tool_use_failed", message="bad call", failed_generation=raw))
    async with make_client(fake) as client:
        with pytest.raises(groq.BadRequestError) as caught:
            await open_stream(client)

    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["failed_generation"] == raw


@pytest.mark.asyncio
async def test_sdk_retries_are_instant_and_consume_replies_in_order(fake: FakeGroq) -> None:
    fake.script(
        error_reply(429, code="rate_limit_exceeded", message="slow down"),
        error_reply(503, code="service_unavailable", message="busy", type_="internal_server_error"),
        text_reply("ok"),
    )
    started = time.monotonic()
    async with make_client(fake, max_retries=2) as client:
        chunks = await collect(client)

    assert time.monotonic() - started < 0.4  # without retry-after-ms the SDK backs off >= 0.75 s
    assert contents(chunks) == ["ok"]
    retry_counts = [r.headers["x-stainless-retry-count"] for r in fake.requests]
    assert retry_counts == ["0", "1", "2"]
    fake.assert_complete()


# --------------------------------------------------------------------------- broken streams


@pytest.mark.asyncio
async def test_stream_error_event_raises_plain_api_error_after_tokens(fake: FakeGroq) -> None:
    fake.script(
        stream_error_reply("Hel", "lo", code="tool_use_failed", message="oops", status_code=400)
    )
    received: list[str] = []
    async with make_client(fake) as client:
        stream = await open_stream(client)
        async with stream:
            with pytest.raises(groq.APIError) as caught:
                await read_all(stream, received)

    assert type(caught.value) is groq.APIError
    assert caught.value.message == "oops"
    assert caught.value.body == {
        "message": "oops",
        "type": "invalid_request_error",
        "code": "tool_use_failed",
        "status_code": 400,
    }
    assert received == ["", "Hel", "lo"]
    fake.assert_complete()


@pytest.mark.asyncio
async def test_cut_connection_raises_remote_protocol_error_after_tokens(fake: FakeGroq) -> None:
    fake.script(cut_reply("Hel", "lo"))
    received: list[str] = []
    async with make_client(fake) as client:
        stream = await open_stream(client)
        async with stream:
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                await read_all(stream, received)

    assert received == ["", "Hel", "lo"]
    assert fake.disconnects == 0  # the server hung up, not the client
    fake.assert_complete()


@pytest.mark.asyncio
async def test_stall_raises_read_timeout_and_the_close_is_seen(fake: FakeGroq) -> None:
    fake.script(stall_reply("Hel"))
    received: list[str] = []
    async with make_client(fake, timeout=httpx.Timeout(0.5)) as client:
        stream = await open_stream(client)
        async with stream:
            with pytest.raises(httpx.ReadTimeout):
                await read_all(stream, received)

    assert received == ["", "Hel"]
    fake.wait_for_disconnect()
    assert fake.disconnects == 1
    fake.assert_complete()


@pytest.mark.asyncio
async def test_closing_the_stream_midway_is_seen_as_a_disconnect(fake: FakeGroq) -> None:
    fake.script(hold_reply(*[f"t{i} " for i in range(100)], delay_s=0.02), text_reply("after"))
    received: list[str] = []
    async with make_client(fake) as client:
        stream = await open_stream(client)
        await take(stream.__aiter__(), received, 3)
        await stream.close()
        fake.wait_for_disconnect()
        after = contents(await collect(client))

    assert received == ["", "t0 ", "t1 "]
    assert fake.disconnects == 1
    assert after == ["after"]  # the fake kept serving after the disconnect
    fake.assert_complete()  # and logged no internal error for it


@pytest.mark.asyncio
async def test_a_finished_stream_is_not_a_disconnect(fake: FakeGroq) -> None:
    fake.script(text_reply("a", "b"), text_reply("c"))
    async with make_client(fake) as client:
        await collect(client)
    async with make_client(fake) as client:
        await collect(client)

    assert fake.disconnects == 0
    with pytest.raises(AssertionError, match="1 disconnect"):
        fake.wait_for_disconnect(timeout=0.05)


@pytest.mark.asyncio
async def test_stop_closes_a_stalled_connection() -> None:
    fake = FakeGroq()
    fake.start()
    fake.script(stall_reply("Hel"))
    async with make_client(fake) as client:
        stream = await open_stream(client)
        async with stream:
            iterator = stream.__aiter__()
            await take(iterator, [], 2)
            await asyncio.to_thread(fake.stop)
            with pytest.raises(httpx.RemoteProtocolError):
                await anext(iterator)
    fake.stop()  # idempotent


# --------------------------------------------------------------------------- bookkeeping


@pytest.mark.asyncio
async def test_request_is_recorded(fake: FakeGroq) -> None:
    fake.script(text_reply("ok"))
    async with make_client(fake) as client:
        await collect(client, tools=[WEATHER_TOOL], tool_choice="auto", max_completion_tokens=64)

    (request,) = fake.wait_for_requests(1)
    assert (request.method, request.path) == ("POST", CHAT_COMPLETIONS_PATH)
    assert request.headers["authorization"] == "Bearer test"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "max_completion_tokens": 64,
    }
    assert json.loads(request.raw_body) == request.body


@pytest.mark.asyncio
async def test_wait_for_requests_sees_a_request_still_in_flight(fake: FakeGroq) -> None:
    fake.script(stall_reply())
    async with make_client(fake) as client:
        stream = await open_stream(client)
        async with stream:
            requests = await asyncio.to_thread(fake.wait_for_requests, 1)
    assert requests[0].body["model"] == MODEL
    with pytest.raises(AssertionError, match="2 request"):
        fake.wait_for_requests(2, timeout=0.05)


@pytest.mark.asyncio
async def test_unscripted_request_fails_loudly_without_retries(fake: FakeGroq) -> None:
    async with make_client(fake, max_retries=2) as client:
        with pytest.raises(groq.InternalServerError, match=UNSCRIPTED_MESSAGE):
            await open_stream(client)

    assert fake.unscripted == 1
    assert len(fake.requests) == 1  # x-should-retry: false stops the SDK's retries
    with pytest.raises(AssertionError, match="unscripted request"):
        fake.assert_complete()


def test_assert_complete_fails_on_unused_replies(fake: FakeGroq) -> None:
    fake.script(text_reply("never"), error_reply(400, code="x", message="never"))
    with pytest.raises(AssertionError, match="2 scripted reply"):
        fake.assert_complete()


def test_base_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeGroq().base_url
