"""Groq through the official SDK (`AsyncGroq`); every SDK and transport error is translated here."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import contextmanager

import groq
import httpx

from app.protocol import ErrorCode
from app.services.llm.base import (
    ChatMessage,
    Finished,
    LLMError,
    LLMEvent,
    StatusListener,
    ToolCallRequest,
    ToolDefinition,
)
from app.services.llm.chat_wire import (
    error_details,
    stream_error_status,
    upstream_code,
    wire_request,
)
from app.services.llm.failed_generation import recover_tool_calls
from app.services.llm.sse import chat_events, sse_data

log = logging.getLogger(__name__)


def _upstream_code(error: groq.APIError) -> str | None:
    return upstream_code(error.body)


def _describe(error: groq.APIError) -> str:
    details = error_details(error.body)
    code = details.get("code") or details.get("type") or "error"
    message = details.get("message") or error.message
    return f"{code}: {message}"


def translate_error(error: Exception) -> LLMError:
    """Map one SDK or transport error to our `LLMError` (the only place that knows them)."""
    if isinstance(error, groq.RateLimitError):
        wait = error.response.headers.get("retry-after")
        hint = f" (Groq asks to wait {wait} s)" if wait else ""
        message = f"rate limited by Groq{hint}"
        return LLMError(ErrorCode.LLM_RATE_LIMITED, message, retryable=True, upstream_status=429)
    if isinstance(error, groq.AuthenticationError):
        return LLMError(ErrorCode.LLM_UNAVAILABLE, "Groq refused the key: check GROQ_API_KEY")
    if isinstance(error, groq.APIConnectionError):
        return LLMError(ErrorCode.LLM_UNAVAILABLE, f"Groq is unavailable: {error}", retryable=True)
    if isinstance(error, groq.APIStatusError):
        return _translate_status_error(error)
    if isinstance(error, groq.APIError):
        return _translate_stream_error(error)
    if isinstance(error, httpx.TimeoutException):
        return LLMError(ErrorCode.LLM_UNAVAILABLE, "Groq stalled: no data in time", retryable=True)
    if isinstance(error, httpx.HTTPError):
        return LLMError(ErrorCode.LLM_UNAVAILABLE, f"Groq stream broke: {error}", retryable=True)
    return LLMError(ErrorCode.LLM_ERROR, f"unexpected model error: {error!r}")


def _translate_status_error(error: groq.APIStatusError) -> LLMError:
    """An HTTP error answer before the stream (429 is `RateLimitError`, handled before)."""
    return _error_with_status(error, error.status_code)


def _translate_stream_error(error: groq.APIError) -> LLMError:
    """An `event: error` inside a 200 stream: its body carries the status the upstream meant."""
    return _error_with_status(error, stream_error_status(error.body))


def _error_with_status(error: groq.APIError, status: int | None) -> LLMError:
    """Our error for an upstream error answer; status and code are kept for fallbacks."""
    code = _upstream_code(error)
    if status is not None and status >= 500:
        return LLMError(
            ErrorCode.LLM_UNAVAILABLE,
            f"Groq is unavailable: {_describe(error)}",
            retryable=True,
            upstream_code=code,
            upstream_status=status,
        )
    if status in (413, 429, 498):
        return LLMError(
            ErrorCode.LLM_RATE_LIMITED,
            _describe(error),
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
    except (groq.GroqError, httpx.HTTPError) as e:
        raise translate_error(e) from e


def _recovered_calls(error: groq.APIError) -> list[ToolCallRequest]:
    details = error_details(error.body)
    if details.get("code") != "tool_use_failed":
        return []
    return recover_tool_calls(details.get("failed_generation"))


class GroqProvider:
    """`LLMProvider` for Groq's chat completions, streamed."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        timeout_s: float,
        max_retries: int,
        max_completion_tokens: int,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        # `timeout.read` bounds the gap between two chunks: a stalled stream fails, not hangs.
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        # `http_client`: a transport of one's own (the request-building bench); else the SDK's.
        self._client = groq.AsyncGroq(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
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
            try:
                async for event in self._stream_once(messages, tools, chosen):
                    yield event
            except groq.APIError as e:
                # Groq could not parse the model's tool call: run it when its raw text is one.
                recovered = _recovered_calls(e)
                if not recovered:
                    raise
                log.info("recovered %d tool call(s) from tool_use_failed", len(recovered))
                for call in recovered:
                    yield call
                yield Finished(finish_reason="tool_calls", usage=None, model=chosen)

    async def _stream_once(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition], model: str
    ) -> AsyncGenerator[LLMEvent, None]:
        # The SDK sends, retries and maps error answers; the 200 body is read by our lean parser.
        # Leaving the block closes the HTTP response: Groq sees the disconnect and stops.
        async with self._client.chat.completions.with_streaming_response.create(
            model=model,
            max_completion_tokens=self._max_completion_tokens,
            stream=True,
            **wire_request(messages, tools),
        ) as response:
            chunks = sse_data(response.iter_lines(), response.http_request)
            async for event in chat_events(chunks, model):
                yield event
