"""Any OpenAI-compatible server (OpenAI, Ollama, vLLM, llama.cpp's server) through the official SDK.

Every SDK error is translated here, once. The SDK wraps transport failures inside a stream
(`APITimeoutError`, `APIConnectionError`) itself, so no transport library leaks past it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import openai
from openai.types.chat import ChatCompletionChunk
from pydantic import JsonValue

from app.protocol import ErrorCode
from app.services.llm.base import (
    ChatMessage,
    Finished,
    LLMError,
    LLMEvent,
    StatusListener,
    TextDelta,
    ToolDefinition,
)
from app.services.llm.chat_wire import (
    ToolCallAssembler,
    error_details,
    stream_error_status,
    upstream_code,
    wire_request,
)

# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the SDK insists on one.
PLACEHOLDER_API_KEY = "not-needed"


def _describe(error: openai.APIError) -> str:
    details = error_details(error.body)
    code = details.get("code") or details.get("type") or "error"
    message = details.get("message") or error.message
    return f"{code}: {message}"


def translate_error(error: openai.OpenAIError) -> LLMError:
    """Map one SDK error to our `LLMError` (the only place that knows the `openai` SDK)."""
    if isinstance(error, openai.AuthenticationError):
        message = "the OpenAI-compatible server refused the key: check OPENAI_API_KEY"
        return LLMError(ErrorCode.LLM_UNAVAILABLE, message, upstream_status=error.status_code)
    if isinstance(error, openai.APITimeoutError):
        message = "the OpenAI-compatible server stalled: no data in time"
        return LLMError(ErrorCode.LLM_UNAVAILABLE, message, retryable=True)
    if isinstance(error, openai.APIConnectionError):
        message = f"the OpenAI-compatible server is unreachable: {error} (check OPENAI_BASE_URL)"
        return LLMError(ErrorCode.LLM_UNAVAILABLE, message, retryable=True)
    if isinstance(error, openai.APIStatusError):
        return _error_with_status(error, error.status_code)
    if isinstance(error, openai.APIError):
        return _error_with_status(error, stream_error_status(error.body))
    return LLMError(ErrorCode.LLM_ERROR, f"unexpected model error: {error!r}")


def _error_with_status(error: openai.APIError, status: int | None) -> LLMError:
    """Our error for an error answer (before or inside the stream); keeps status and code."""
    code = upstream_code(error.body)
    if status is not None and status >= 500:
        return LLMError(
            ErrorCode.LLM_UNAVAILABLE,
            f"the OpenAI-compatible server failed: {_describe(error)}",
            retryable=True,
            upstream_code=code,
            upstream_status=status,
        )
    if status == 429:
        return LLMError(
            ErrorCode.LLM_RATE_LIMITED,
            f"rate limited: {_describe(error)}",
            retryable=True,
            upstream_code=code,
            upstream_status=status,
        )
    return LLMError(
        ErrorCode.LLM_ERROR, _describe(error), upstream_code=code, upstream_status=status
    )


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except openai.OpenAIError as e:
        raise translate_error(e) from e


def _usage(chunk: ChatCompletionChunk) -> dict[str, JsonValue] | None:
    if chunk.usage is None:
        return None
    return cast(dict[str, JsonValue], chunk.usage.model_dump(exclude_none=True))


class OpenAIProvider:
    """`LLMProvider` for the chat completions of any OpenAI-compatible server, streamed."""

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        model: str,
        timeout_s: float,
        max_retries: int,
        max_completion_tokens: int,
    ) -> None:
        # `read` bounds the gap between two chunks: a stalled stream fails, not hangs.
        timeout = openai.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._client = openai.AsyncOpenAI(
            api_key=api_key or PLACEHOLDER_API_KEY,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        self._model = model
        self._max_completion_tokens = max_completion_tokens

    @property
    def model(self) -> str:
        return self._model

    async def aclose(self) -> None:
        await self._client.close()

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        model: str | None = None,
        on_status: StatusListener | None = None,
    ) -> AsyncGenerator[LLMEvent, None]:
        chosen = model or self._model
        with _translated_errors():
            upstream = await self._client.chat.completions.create(
                model=chosen,
                max_completion_tokens=self._max_completion_tokens,
                stream=True,
                stream_options={"include_usage": True},
                **wire_request(messages, tools),
            )
            # Closing the SDK stream closes the HTTP response: the server stops generating.
            async with upstream:
                async for event in self._events(upstream, chosen):
                    yield event

    async def _events(
        self, upstream: openai.AsyncStream[ChatCompletionChunk], model: str
    ) -> AsyncGenerator[LLMEvent, None]:
        calls = ToolCallAssembler()
        finish_reason: str | None = None
        usage: dict[str, JsonValue] | None = None
        async for chunk in upstream:
            usage = _usage(chunk) or usage
            for choice in chunk.choices[:1]:
                if choice.delta.content:
                    yield TextDelta(choice.delta.content)
                for tool_delta in choice.delta.tool_calls or ():
                    calls.add(tool_delta)
                finish_reason = choice.finish_reason or finish_reason
        if finish_reason is None:
            # The body ended without a finish reason: the answer is incomplete, not finished.
            message = "the OpenAI-compatible server's stream ended early"
            raise LLMError(ErrorCode.LLM_UNAVAILABLE, message, retryable=True)
        for call in calls.finish():
            yield call
        yield Finished(finish_reason=finish_reason, usage=usage, model=model)
