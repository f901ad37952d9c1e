"""`chat <model>` spans: one per model request, around any `LLMProvider`.

Every model request goes through the provider, the response's rounds, the rolling summary and
the summary and title jobs alike, so wrapping the provider traces them all in one place: each
span is a child of whatever span is current when the request starts. Time to first token is
one span event; nothing is recorded per token.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import assert_never

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from app.services.llm.base import (
    ChatMessage,
    Finished,
    LLMError,
    LLMEvent,
    LLMProvider,
    ModelRequest,
    ModelResponse,
    RequestPart,
    StatusListener,
    SystemPart,
    TextDelta,
    TextPart,
    ToolCallPart,
    ToolCallRequest,
    ToolDefinition,
    ToolReturnPart,
    UserPart,
)
from app.services.tracing.attributes import Attributes, as_json, current_who, tokens

FIRST_CHUNK_EVENT = "first_token"
_CHAT = gen_ai.GenAiOperationNameValues.CHAT.value


def chat_messages(messages: Sequence[ChatMessage]) -> str:
    """The request's messages in the conventions' form (`gen_ai.input.messages`): a message per
    request part (as on the chat-completions wire), one per response."""
    converted: list[dict[str, object]] = []
    for message in messages:
        if isinstance(message, ModelRequest):
            converted.extend(map(_request_part, message.parts))
        elif isinstance(message, ModelResponse):
            converted.append(_response(message))
        else:
            assert_never(message)
    return as_json(converted)


def _text(content: str) -> list[dict[str, object]]:
    return [{"type": "text", "content": content}] if content else []


def _request_part(part: RequestPart) -> dict[str, object]:
    if isinstance(part, SystemPart):
        return {"role": "system", "parts": _text(part.content)}
    if isinstance(part, UserPart):
        return {"role": "user", "parts": _text(part.content)}
    if isinstance(part, ToolReturnPart):
        response = {
            "type": "tool_call_response",
            "id": part.call_id,
            "response": _text(part.content),
        }
        return {"role": "tool", "parts": [response]}
    assert_never(part)


def _response(message: ModelResponse) -> dict[str, object]:
    text = "".join(part.content for part in message.parts if isinstance(part, TextPart))
    parts = _text(text)
    for part in message.parts:
        if isinstance(part, ToolCallPart):
            parts.append(
                {
                    "type": "tool_call",
                    "id": part.call_id,
                    "name": part.name,
                    "arguments": part.arguments,
                }
            )
    return {"role": "assistant", "parts": parts}


class ChatSpan:
    """The span of one model request, fed the request's events as they pass."""

    def __init__(self, span: Span, *, capture_content: bool) -> None:
        self._span = span
        self._capture_content = capture_content
        self._started = time.monotonic()
        self._first_seen = False
        self._text: list[str] = []
        self._calls: list[ToolCallRequest] = []

    def saw(self, event: LLMEvent) -> None:
        """Called per event: past the first one, a check (and with content capture, a copy)."""
        if isinstance(event, Finished):
            self._finished(event)
            return
        if not self._first_seen:
            self._first_seen = True
            elapsed = time.monotonic() - self._started
            self._span.add_event(
                FIRST_CHUNK_EVENT, {gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: elapsed}
            )
            self._span.set_attribute(gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, elapsed)
        if self._capture_content:
            if isinstance(event, TextDelta):
                self._text.append(event.text)
            else:
                self._calls.append(event)

    def _finished(self, event: Finished) -> None:
        self._span.set_attributes(
            {
                gen_ai.GEN_AI_RESPONSE_FINISH_REASONS: [event.finish_reason],
                gen_ai.GEN_AI_RESPONSE_MODEL: event.model,
                **tokens(event.usage),
            }
        )
        if self._capture_content:
            self._span.set_attribute(gen_ai.GEN_AI_OUTPUT_MESSAGES, self._output(event))

    def _output(self, event: Finished) -> str:
        parts: list[dict[str, object]] = []
        if self._text:
            parts.append({"type": "text", "content": "".join(self._text)})
        for call in self._calls:
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
        message = {"role": "assistant", "parts": parts, "finish_reason": event.finish_reason}
        return as_json([message])

    def end(self, error: BaseException | None) -> None:
        """End the span: failed for an error, marked (not failed) for a cancellation."""
        if isinstance(error, LLMError):
            self._span.set_attribute(ERROR_TYPE, error.upstream_code or error.kind.value)
            self._span.set_status(Status(StatusCode.ERROR, error.message))
        elif isinstance(error, Exception):
            self._span.set_attribute(ERROR_TYPE, type(error).__name__)
            self._span.set_status(Status(StatusCode.ERROR, str(error)))
        elif error is not None:
            self._span.set_attribute(ERROR_TYPE, "cancelled")
        self._span.end()


class TracedProvider:
    """An `LLMProvider` that puts a `chat <model>` span around each request of the one it wraps."""

    def __init__(
        self,
        inner: LLMProvider,
        tracer: trace.Tracer,
        *,
        provider_name: str,
        capture_content: bool,
    ) -> None:
        self._inner = inner
        self._tracer = tracer
        self._provider_name = provider_name
        self._capture_content = capture_content

    @property
    def model(self) -> str:
        return self._inner.model

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        model: str | None = None,
        on_status: StatusListener | None = None,
    ) -> AsyncGenerator[LLMEvent, None]:
        span = self._start(model or self._inner.model, messages)
        error: BaseException | None = None
        try:
            inner = self._inner.stream(messages, tools=tools, model=model, on_status=on_status)
            async with aclosing(inner) as events:
                async for event in events:
                    span.saw(event)
                    yield event
        except GeneratorExit:
            raise  # the caller stopped reading: not a failure of the request
        except BaseException as e:
            error = e
            raise
        finally:
            span.end(error)

    def _start(self, model: str, messages: Sequence[ChatMessage]) -> ChatSpan:
        attributes: Attributes = {
            gen_ai.GEN_AI_OPERATION_NAME: _CHAT,
            gen_ai.GEN_AI_PROVIDER_NAME: self._provider_name,
            gen_ai.GEN_AI_REQUEST_MODEL: model,
            gen_ai.GEN_AI_REQUEST_STREAM: True,
            **current_who(),
        }
        if self._capture_content:
            attributes[gen_ai.GEN_AI_INPUT_MESSAGES] = chat_messages(messages)
        # Not made current: it ends in another `__anext__` of the stream than the one that
        # started it, and nothing of ours runs beneath it.
        span = self._tracer.start_span(
            f"{_CHAT} {model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        return ChatSpan(span, capture_content=self._capture_content)

    async def aclose(self) -> None:
        await self._inner.aclose()
