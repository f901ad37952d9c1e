"""The real local model (SmolLM2-135M-Instruct in llama.cpp), end to end and at the provider.

A 135M model's wording varies, so these tests assert structure: which tool with which
arguments, that text streamed, how the response ended; never exact text.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from app.services.llm.base import (
    ChatMessage,
    Finished,
    LLMError,
    LLMErrorKind,
    LLMEvent,
    LLMProvider,
    ModelRequest,
    ModelStatus,
    SystemPart,
    TextDelta,
    UserPart,
)
from app.settings import DEFAULT_SYSTEM_PROMPT
from tests.conftest import StartServer
from tests.services.llm.local_model import require_local_model
from tests.support.client import Frame, WsClient
from tests.support.waiting import wait_until

LABEL = "local:SmolLM2-135M-Instruct (small offline model)"
ANSWER_TIMEOUT_S = 30.0  # generous: the 2 cores are shared with the rest of the suite


def _conversation(text: str) -> list[ChatMessage]:
    return [ModelRequest([SystemPart(DEFAULT_SYSTEM_PROMPT), UserPart(text)])]


@pytest.fixture
async def provider() -> AsyncIterator[LLMProvider]:
    from app.services.llm.local import LocalProvider

    local = LocalProvider(
        model_path=require_local_model(), label=LABEL, max_completion_tokens=24, threads=None
    )
    yield local
    await local.aclose()


async def _ask(client: WsClient, text: str) -> list[Frame]:
    await client.send({"type": "user.message", "text": text})
    return await client.recv_until("response.done", timeout=ANSWER_TIMEOUT_S)


def _deltas(frames: list[Frame]) -> list[str]:
    return [frame["text"] for frame in frames if frame["type"] == "response.delta"]


# ---------------------------------------------------------------- end to end, through /ws


async def test_the_seed_example_calls_the_tool_offline(start_server: StartServer) -> None:
    require_local_model()
    server = start_server(llm_provider="local", groq_api_key=None, llm_max_completion_tokens=48)
    async with server.connect() as client:
        ready = await client.ready()
        frames = await _ask(client, "Can you fetch the profile for user 123?")
    assert ready["model"] == LABEL
    calls = [frame for frame in frames if frame["type"] == "tool.call"]
    results = [frame for frame in frames if frame["type"] == "tool.result"]
    assert [(call["name"], call["arguments"]) for call in calls] == [
        ("fetch_user_profile", {"user_id": "123"})
    ]
    assert results[0]["ok"] is True
    done = frames[-1]
    assert done["status"] == "completed"
    assert done["model"] == LABEL
    assert _deltas(frames), "the answer after the tool result streamed no text"
    assert done["text"] == "".join(_deltas(frames))


async def test_a_plain_answer_streams_token_by_token(start_server: StartServer) -> None:
    require_local_model()
    server = start_server(llm_provider="local", groq_api_key=None, llm_max_completion_tokens=32)
    async with server.connect() as client:
        await client.ready()
        frames = await _ask(client, "Write one sentence about the sea.")
    done = frames[-1]
    assert done["status"] == "completed"
    assert len(_deltas(frames)) > 1
    assert done["text"] == "".join(_deltas(frames))
    assert done["usage"]["completion_tokens"] >= 1


# ---------------------------------------------------------------- the provider


async def test_calls_take_turns_in_order_and_waiters_hear_so(provider: LLMProvider) -> None:
    timeline: list[tuple[str, LLMEvent]] = []
    statuses: list[ModelStatus] = []

    async def listen(status: ModelStatus) -> None:
        statuses.append(status)

    async def consume(name: str, events: AsyncIterator[LLMEvent]) -> None:
        async for event in events:
            timeline.append((name, event))

    async with aclosing(provider.stream(_conversation("Name a colour."))) as first:
        timeline.append(("first", await anext(first)))  # the first call is running now
        second = provider.stream(_conversation("Name a fruit."), on_status=listen)
        async with asyncio.TaskGroup() as group:
            group.create_task(consume("second", second))

            async def queued() -> bool:
                return bool(statuses)

            await wait_until(queued, ANSWER_TIMEOUT_S, what="the second call to be queued")
            assert statuses == [ModelStatus("queued", 1, statuses[0].message)]
            await consume("first", first)
    names = [name for name, _ in timeline]
    in_turn = ["first"] * names.count("first") + ["second"] * names.count("second")
    assert names == in_turn, "the calls overlapped"
    assert [status.state for status in statuses] == ["queued", "started"]
    assert isinstance(timeline[-1][1], Finished)


async def test_closing_a_stream_stops_its_generation() -> None:
    from app.services.llm.local import LocalProvider

    local = LocalProvider(
        model_path=require_local_model(), label=LABEL, max_completion_tokens=512, threads=None
    )
    statuses: list[ModelStatus] = []

    async def listen(status: ModelStatus) -> None:
        statuses.append(status)

    try:
        async with aclosing(local.stream(_conversation("Tell a very long story."))) as story:
            assert isinstance(await anext(story), TextDelta)
        # Closing returned once the worker left the call: what it generated is final now.
        stopped_after = local.generated_tokens
        async with aclosing(local.stream(_conversation("Hi"), on_status=listen)) as reply:
            events = [event async for event in reply]
    finally:
        await local.aclose()
    assert stopped_after <= 3, f"the closed call went on for {stopped_after} tokens"
    assert statuses == [], "the closed call still held the model"
    assert isinstance(events[-1], Finished)


async def test_aclose_stops_the_worker_thread() -> None:
    from app.services.llm.local import LocalProvider

    local = LocalProvider(
        model_path=require_local_model(), label=LABEL, max_completion_tokens=4, threads=None
    )
    async with aclosing(local.stream(_conversation("Hi"))) as reply:
        [event async for event in reply]
    assert any(thread.name.startswith("local-model") for thread in threading.enumerate())
    await local.aclose()
    assert not any(thread.name.startswith("local-model") for thread in threading.enumerate())


async def test_a_conversation_longer_than_the_window_is_refused_clearly(
    provider: LLMProvider,
) -> None:
    with pytest.raises(LLMError) as caught:
        async with aclosing(provider.stream(_conversation("word " * 20_000))) as events:
            [event async for event in events]
    assert caught.value.kind is LLMErrorKind.CONTEXT_TOO_LONG


async def test_a_file_that_is_not_a_model_fails_the_call_clearly(tmp_path: Path) -> None:
    from app.services.llm.local import LocalProvider

    require_local_model()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    local = LocalProvider(
        model_path=broken, label="local:broken", max_completion_tokens=4, threads=None
    )
    try:
        with pytest.raises(LLMError) as caught:
            async with aclosing(local.stream(_conversation("Hi"))) as events:
                [event async for event in events]
    finally:
        await local.aclose()
    assert caught.value.kind is LLMErrorKind.UNAVAILABLE
    assert "could not be loaded" in caught.value.message
