"""A lean reader of the chat-completions SSE stream: httpx lines in, our events out.

The SDK still sends the request, retries it and turns error answers into its exceptions; only
the body of a 200 stream is read here, because parsing every chunk into SDK models costs about
eight times more CPU (docs/performance.md). An `event: error` inside the stream becomes the same
`groq.APIError` the SDK raises, so error handling stays the SDK's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import groq
import httpx
import orjson
from pydantic import JsonValue

from app.protocol import ErrorCode
from app.services.llm.base import Finished, LLMError, LLMEvent, TextDelta
from app.services.llm.chat_wire import ToolCallAssembler

DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class _Function:
    name: str | None
    arguments: str | None


@dataclass(frozen=True, slots=True)
class _ToolCallDelta:
    index: int
    id: str | None
    function: _Function | None


async def sse_data(lines: AsyncIterator[str], request: httpx.Request) -> AsyncIterator[Any]:
    """The decoded `data:` payloads of an SSE body, until `[DONE]`."""
    event, data = None, []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif not line and data:
            payload = "\n".join(data)
            if payload == DONE:
                return
            yield _decoded(payload, event, request)
            event, data = None, []


def _decoded(payload: str, event: str | None, request: httpx.Request) -> Any:
    value = orjson.loads(payload)
    error = value.get("error") if isinstance(value, dict) else None
    if error or event == "error":
        message = error.get("message") if isinstance(error, dict) else None
        raise groq.APIError(message or "error in the stream", request, body=error)
    return value


def _tool_delta(raw: dict[str, Any]) -> _ToolCallDelta:
    function = raw.get("function")
    return _ToolCallDelta(
        index=int(raw.get("index", 0)),
        id=raw.get("id"),
        function=_Function(function.get("name"), function.get("arguments")) if function else None,
    )


def _usage(chunk: dict[str, Any]) -> dict[str, JsonValue] | None:
    usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
    if not isinstance(usage, dict):
        return None
    return {key: value for key, value in usage.items() if value is not None}


async def chat_events(chunks: AsyncIterator[Any], model: str) -> AsyncIterator[LLMEvent]:
    """Our events from decoded chunks: text, then whole tool calls, then `Finished`."""
    calls = ToolCallAssembler()
    finish_reason: str | None = None
    usage: dict[str, JsonValue] | None = None
    async for chunk in chunks:
        x_groq = chunk.get("x_groq") or {}
        if x_groq.get("error"):
            raise LLMError(ErrorCode.LLM_UNAVAILABLE, f"Groq stopped: {x_groq['error']}")
        usage = _usage(chunk) or usage
        for choice in (chunk.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            if content := delta.get("content"):
                yield TextDelta(content)
            for raw in delta.get("tool_calls") or ():
                calls.add(_tool_delta(raw))
            finish_reason = choice.get("finish_reason") or finish_reason
    if finish_reason is None:
        # The body ended without a final chunk: the answer is incomplete, not finished.
        raise LLMError(ErrorCode.LLM_UNAVAILABLE, "Groq's stream ended early", retryable=True)
    for call in calls.finish():
        yield call
    yield Finished(finish_reason=finish_reason, usage=usage, model=model)
