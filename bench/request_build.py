"""Micro-benchmark: CPU to build and send one model request, then read a one-chunk answer.

``python -m bench.request_build`` calls ``GroqProvider.stream`` and ``OpenAIProvider.stream``
(the one chat-completions adapter, through each vendor's SDK) with a 20-message history (the
system prompt and 19 turns) and the three built-in tools, over an in-process HTTP transport that
answers at once, so what is measured is our side and the SDK's, not a network. Beside them: the
request body alone (our messages to JSON bytes, ``request_body``), and the same request made
the way the provider made it before 2026-11-26: ``messages`` and ``tools`` as typed parameters
of ``chat.completions.create``, which the SDK transforms field by field.
Target (issue "tail latency"): at most 1 ms of CPU per request. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import groq
import httpx

from app.services.llm.base import (
    ChatMessage,
    LLMProvider,
    ModelRequest,
    ModelResponse,
    SystemPart,
    TextPart,
    ToolDefinition,
    UserPart,
)
from app.services.llm.chat_completions import request_body
from app.services.llm.chat_wire import wire_messages
from app.services.llm.groq import GROQ, GroqProvider
from app.services.llm.openai import OpenAIProvider
from app.services.tools import DEFAULT_TOOLS, ToolRegistry

_ANSWER = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"bench",'
    b'"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_ANSWER)


def history() -> list[ChatMessage]:
    turns: list[ChatMessage] = [
        ModelRequest([UserPart(f"message {i} " * 20)])
        if i % 2 == 0
        else ModelResponse([TextPart(f"message {i} " * 20)])
        for i in range(19)
    ]
    return [ModelRequest([SystemPart("You are a helpful assistant. " * 20)]), *turns]


def _http() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(_answer))


async def _via_provider(provider: LLMProvider, tools: list[ToolDefinition]) -> None:
    async for _ in provider.stream(history(), tools=tools):
        pass


async def _body_only(tools: list[ToolDefinition]) -> None:
    request_body(history(), tools, model="bench", max_completion_tokens=1024, vendor=GROQ)


async def _via_typed_params(client: groq.AsyncGroq, tools: list[ToolDefinition]) -> None:
    messages = wire_messages(history())
    async with client.chat.completions.with_streaming_response.create(
        model="bench", messages=cast(Any, messages), tools=cast(Any, tools), stream=True
    ) as response:
        async for _ in response.iter_lines():
            pass


async def cpu_ms(work: Callable[[], Awaitable[None]], repeat: int) -> float:
    for _ in range(max(repeat // 10, 5)):
        await work()  # warm-up: imports, caches, connection objects
    before = time.process_time()
    for _ in range(repeat):
        await work()
    return (time.process_time() - before) / repeat * 1e3


async def main(repeat: int) -> None:
    tools = ToolRegistry(DEFAULT_TOOLS).definitions()
    common: dict[str, Any] = {
        "model": "bench",
        "timeout_s": 10,
        "max_retries": 0,
        "max_completion_tokens": 1024,
    }
    groq_provider = GroqProvider(
        api_key="bench", base_url="http://bench.invalid", http_client=_http(), **common
    )
    openai_provider = OpenAIProvider(
        api_key="bench", base_url="http://bench.invalid/v1", http_client=_http(), **common
    )
    typed = groq.AsyncGroq(api_key="bench", base_url="http://bench.invalid", http_client=_http())
    rows = []
    for _ in range(2):  # interleaved, so a noisy moment touches all
        rows += [
            (
                "typed params (SDK transform)",
                await cpu_ms(lambda: _via_typed_params(typed, tools), repeat),
            ),
            ("GroqProvider", await cpu_ms(lambda: _via_provider(groq_provider, tools), repeat)),
            ("OpenAIProvider", await cpu_ms(lambda: _via_provider(openai_provider, tools), repeat)),
            ("request body only", await cpu_ms(lambda: _body_only(tools), repeat)),
        ]
    await groq_provider.aclose()
    await openai_provider.aclose()
    await typed.close()
    print(f"CPU per request, 20 messages + {len(tools)} tools, {repeat} requests a row:")
    for name, ms in rows:
        print(f"  {name:28} {ms:6.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))
