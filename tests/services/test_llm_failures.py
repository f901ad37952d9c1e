"""A model failure ends its response in one failed `response.done`; the session goes on."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import StartServer
from tests.fakes.groq_server import (
    FakeGroq,
    Reply,
    StreamEnd,
    cut_reply,
    error_reply,
    malformed_reply,
    stall_reply,
    stream_error_reply,
    text_reply,
)
from tests.support.client import types_of


async def test_without_a_key_the_server_runs_and_says_how_to_configure(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(llm_provider="groq", groq_api_key=None)
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("hello")
    done = frames[-1]
    assert types_of(frames) == ["user.message", "response.started", "response.done"]
    assert done["status"] == "failed"
    assert done["error"]["code"] == "llm_unavailable"
    assert "GROQ_API_KEY" in done["error"]["message"]
    assert fake_groq.requests == []


@pytest.mark.parametrize(
    ("reply", "code", "partial"),
    [
        (
            error_reply(
                429,
                code="rate_limit_exceeded",
                message="slow down",
                retry_after="7",
                retry_after_ms=None,
            ),
            "llm_rate_limited",
            "",
        ),
        (
            error_reply(500, code="internal_server_error", message="oops", type_="server_error"),
            "llm_unavailable",
            "",
        ),
        (
            error_reply(503, code="service_unavailable", message="busy", type_="server_error"),
            "llm_unavailable",
            "",
        ),
        (error_reply(404, code="model_not_found", message="no such model"), "llm_error", ""),
        (error_reply(401, code="invalid_api_key", message="bad key"), "llm_unavailable", ""),
        (stream_error_reply("par", "tial"), "llm_unavailable", "partial"),
        (stream_error_reply("x", code="tool_use_failed", status_code=400), "llm_error", "x"),
        (cut_reply("cut ", "here"), "llm_unavailable", "cut here"),
    ],
)
async def test_upstream_failure_is_reported_in_response_done(
    start_server: StartServer, fake_groq: FakeGroq, reply: Reply, code: str, partial: str
) -> None:
    server = start_server()
    fake_groq.script(reply, text_reply("recovered"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("hello")
        again = await client.ask("again")
    done = frames[-1]
    assert done["status"] == "failed"
    assert done["error"]["code"] == code
    assert done["finish_reason"] == "error"
    assert done["text"] == partial
    assert "".join(f["text"] for f in frames if f["type"] == "response.delta") == partial
    assert not [f for f in frames if f["type"] == "error"]
    assert again[-1]["status"] == "completed"
    assert again[-1]["text"] == "recovered"


async def test_rate_limit_message_carries_the_wait_groq_asked_for(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server()
    fake_groq.script(
        error_reply(
            429, code="rate_limit_exceeded", message="slow", retry_after="7", retry_after_ms=None
        )
    )
    async with server.connect() as client:
        await client.ready()
        done = (await client.ask("hello"))[-1]
    assert "7" in done["error"]["message"]


async def test_stalled_stream_fails_and_closes_the_upstream(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(llm_timeout_s=0.3)
    fake_groq.script(stall_reply("wait"))
    async with server.connect() as client:
        await client.ready()
        done = (await client.ask("hello"))[-1]
    await asyncio.to_thread(fake_groq.wait_for_disconnect)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "llm_unavailable"
    assert done["text"] == "wait"


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            malformed_reply(
                b'data: {"choices": [{"delta": {"content": "x"\n\n', tokens_before=["a"]
            ),
            id="invalid-json",
        ),
        pytest.param(malformed_reply(b"data: hello\n\n", tokens_before=["a"]), id="not-json"),
        pytest.param(malformed_reply(b"data: [1, 2]\n\n", tokens_before=["a"]), id="an-array"),
        pytest.param(
            malformed_reply(b'data: {"choices": "many"}\n\n', tokens_before=["a"]),
            id="choices-not-a-list",
        ),
        pytest.param(
            malformed_reply(
                b'data: {"choices": [{"delta": {"content": 5}}]}\n\n', tokens_before=["a"]
            ),
            id="content-a-number",
        ),
        pytest.param(
            malformed_reply(
                b'data: {"choices": [{"delta": {"tool_calls": [{"index": "first"}]}}]}\n\n',
                tokens_before=["a"],
            ),
            id="tool-call-index-a-word",
        ),
        pytest.param(
            malformed_reply(
                b'data: {"choices": [{"delta": {"tool_calls": ["call"]}}]}\n\n', tokens_before=["a"]
            ),
            id="tool-call-a-string",
        ),
        pytest.param(
            malformed_reply(
                b"event: error\ndata: <html>Bad gateway</html>\n\n", tokens_before=["a"]
            ),
            id="error-event-not-json",
        ),
        pytest.param(malformed_reply(tokens_before=["a"], end=StreamEnd.EARLY), id="no-last-chunk"),
        pytest.param(
            malformed_reply(b"data: [DONE]\n\n", tokens_before=["a"], end=StreamEnd.EARLY),
            id="done-before-the-end",
        ),
        pytest.param(
            malformed_reply(
                b'data: {"choices": [{"delta"', tokens_before=["a"], end=StreamEnd.EARLY
            ),
            id="cut-mid-event",
        ),
        pytest.param(
            malformed_reply(tokens_before=["a"], end=StreamEnd.BAD_FRAMING), id="bad-http-framing"
        ),
    ],
)
async def test_a_stream_that_cannot_be_read_is_llm_unavailable(
    start_server: StartServer, fake_groq: FakeGroq, reply: Reply
) -> None:
    server = start_server()
    fake_groq.script(reply, text_reply("recovered"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("hello")
        again = await client.ask("again")
    done = frames[-1]
    assert types_of(frames) == [
        "user.message",
        "response.started",
        "response.delta",
        "response.done",
    ]
    assert done["status"] == "failed"
    assert done["error"]["code"] == "llm_unavailable"
    assert done["text"] == "a"
    assert again[-1]["status"] == "completed"
