"""GROQ_FALLBACK_MODELS end to end: the real server, the real SDK, the fake Groq.

A model that cannot answer at all hands the response to the next model, and the response
records which model answered; once text of an attempt reached the client, a failure is final.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import StartServer
from tests.fakes.groq_server import (
    FakeGroq,
    Reply,
    error_reply,
    stream_error_reply,
    text_reply,
)
from tests.support.client import Frame
from tests.support.server import RunningServer

FALLBACKS = "fallback-a,fallback-b"


async def _ask_and_reread(server: RunningServer, text: str) -> tuple[list[Frame], Frame]:
    """The frames of one answer, and the assistant message stored for it (read on resume)."""
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        frames = await client.ask(text)
    async with server.connect(f"session_id={session_id}") as client:
        events = (await client.ready())["events"]
    stored = [event for event in events if event["type"] == "assistant.message"]
    return frames, stored[-1]


def _models_asked(fake_groq: FakeGroq) -> list[Any]:
    return [request.body.get("model") for request in fake_groq.requests]


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(
            error_reply(400, code="model_decommissioned", message="retired"), id="decommissioned"
        ),
        pytest.param(error_reply(404, code="model_not_found", message="no such"), id="not-found"),
        pytest.param(
            error_reply(429, code="rate_limit_exceeded", message="slow down"), id="rate-limited"
        ),
        pytest.param(
            error_reply(503, code="service_unavailable", message="busy", type_="server_error"),
            id="5xx",
        ),
        pytest.param(
            stream_error_reply(code="over_capacity", status_code=503), id="5xx-in-stream-first"
        ),
    ],
)
async def test_a_model_that_cannot_answer_hands_over_to_the_next(
    start_server: StartServer, fake_groq: FakeGroq, failure: Reply
) -> None:
    server = start_server(groq_fallback_models=FALLBACKS)
    fake_groq.script(failure, text_reply("Hel", "lo"))
    frames, stored = await _ask_and_reread(server, "hello")
    done = frames[-1]
    assert done["status"] == "completed"
    assert done["text"] == "Hello"
    assert done["model"] == "fallback-a"
    assert stored["model"] == "fallback-a"
    assert _models_asked(fake_groq)[:2] == ["test-model", "fallback-a"]


async def test_rate_limits_move_on_only_after_the_sdk_retries(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(groq_fallback_models=FALLBACKS, llm_max_retries=1)
    limited = error_reply(429, code="rate_limit_exceeded", message="slow down")
    fake_groq.script(limited, limited, text_reply("ok"))
    frames, _ = await _ask_and_reread(server, "hello")
    assert frames[-1]["model"] == "fallback-a"
    assert _models_asked(fake_groq)[:3] == ["test-model", "test-model", "fallback-a"]


async def test_every_model_in_turn_then_the_last_error(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(groq_fallback_models=FALLBACKS)
    fake_groq.script(
        error_reply(404, code="model_not_found", message="no such"),
        error_reply(400, code="model_decommissioned", message="retired"),
        error_reply(500, code="internal_server_error", message="boom", type_="server_error"),
    )
    frames, stored = await _ask_and_reread(server, "hello")
    done = frames[-1]
    assert done["status"] == "failed"
    assert done["error"]["code"] == "llm_unavailable"
    assert stored["status"] == "failed"
    assert _models_asked(fake_groq)[:3] == ["test-model", "fallback-a", "fallback-b"]


async def test_after_text_reached_the_client_a_failure_is_final(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(groq_fallback_models=FALLBACKS)
    fake_groq.script(stream_error_reply("par", "tial", status_code=503))
    frames, stored = await _ask_and_reread(server, "hello")
    done = frames[-1]
    assert done["status"] == "failed"
    assert done["text"] == "partial"
    assert stored["text"] == "partial"
    assert _models_asked(fake_groq)[:1] == ["test-model"]
    assert "fallback-a" not in _models_asked(fake_groq)


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(
            error_reply(400, code="invalid_request", message="bad field"), id="bad-request"
        ),
        pytest.param(error_reply(401, code="invalid_api_key", message="bad key"), id="bad-key"),
    ],
)
async def test_errors_another_model_would_not_fix_do_not_fall_back(
    start_server: StartServer, fake_groq: FakeGroq, failure: Reply
) -> None:
    server = start_server(groq_fallback_models=FALLBACKS)
    fake_groq.script(failure)
    frames, _ = await _ask_and_reread(server, "hello")
    assert frames[-1]["status"] == "failed"
    assert "fallback-a" not in _models_asked(fake_groq)


async def test_without_fallback_models_a_retired_model_fails_the_response(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server()
    fake_groq.script(error_reply(400, code="model_decommissioned", message="retired"))
    frames, _ = await _ask_and_reread(server, "hello")
    assert frames[-1]["status"] == "failed"
    assert frames[-1]["error"]["code"] == "llm_error"
