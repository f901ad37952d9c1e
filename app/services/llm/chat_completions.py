"""One adapter for every chat-completions server: Groq, OpenAI, Ollama, vLLM, llama.cpp's server.

They all speak one wire format, so the request is built here (our messages through
`chat_wire.wire_messages`, one `orjson.dumps`) and the stream is read here (`sse.chat_events`),
once for all, on the lean path: no SDK model is built per request or per chunk. What differs is
the `Vendor` (its error map and wire extensions, vendor.py) and the `Sender`: the vendor's own
SDK, kept for what it does well, retrying before any output (429, 5xx, connection errors, with
backoff and `retry-after`) and raising typed errors for error answers (groq.py, openai.py).
Every failure leaves `stream` as an `LLMError`, translated here, once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any, Protocol

import httpx
import orjson

from app.services.llm.base import (
    ChatMessage,
    Finished,
    LLMEvent,
    StatusListener,
    ToolDefinition,
)
from app.services.llm.chat_wire import wire_messages
from app.services.llm.sse import chat_events
from app.services.llm.vendor import ErrorAnswer, Unreachable, Vendor

log = logging.getLogger(__name__)


class Sender(Protocol):
    """Posts a request body to the vendor's chat-completions endpoint."""

    async def send(self, body: bytes) -> httpx.Response:
        """The answer of a 200, its body not read yet (the caller closes it). An error answer
        raises `ErrorAnswer`; no answer at all (after the retries) raises `Unreachable`."""
        ...

    async def aclose(self) -> None: ...


def request_body(
    messages: Sequence[ChatMessage],
    tools: Sequence[ToolDefinition],
    *,
    model: str,
    max_completion_tokens: int,
    vendor: Vendor,
) -> bytes:
    """The JSON body of one streamed chat-completions request."""
    body: dict[str, Any] = {
        "model": model,
        "messages": wire_messages(messages),
        "max_completion_tokens": max_completion_tokens,
        "stream": True,
        **vendor.extra_body,
    }
    if tools:
        body["tools"] = list(tools)
    return orjson.dumps(body)


class ChatCompletionsProvider:
    """`LLMProvider` for a chat-completions server, streamed."""

    def __init__(
        self, *, vendor: Vendor, sender: Sender, model: str, max_completion_tokens: int
    ) -> None:
        self._vendor = vendor
        self._sender = sender
        self._model = model
        self._max_completion_tokens = max_completion_tokens

    @property
    def model(self) -> str:
        return self._model

    async def aclose(self) -> None:
        await self._sender.aclose()

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        model: str | None = None,
        on_status: StatusListener | None = None,
    ) -> AsyncGenerator[LLMEvent, None]:
        chosen = model or self._model
        vendor = self._vendor
        body = request_body(
            messages,
            tools,
            model=chosen,
            max_completion_tokens=self._max_completion_tokens,
            vendor=vendor,
        )
        try:
            async with aclosing(self._stream_once(body, chosen)) as events:
                async for event in events:
                    yield event
        except ErrorAnswer as answer:
            # Groq could not parse the model's tool call: run it when its raw text is one.
            recovered = vendor.recovered_calls(answer)
            if not recovered:
                raise vendor.answer_error(answer) from answer
            log.info("recovered %d tool call(s) from tool_use_failed", len(recovered))
            for call in recovered:
                yield call
            yield Finished(finish_reason="tool_calls", usage=None, model=chosen)
        except Unreachable as e:
            raise vendor.unreachable(e) from e
        except httpx.TimeoutException as e:
            raise vendor.stalled() from e
        except httpx.HTTPError as e:
            raise vendor.broken(str(e) or type(e).__name__) from e

    async def _stream_once(self, body: bytes, model: str) -> AsyncGenerator[LLMEvent, None]:
        response = await self._sender.send(body)
        # Closing the response (at the end, or when the caller stops reading) closes the
        # connection's stream: the upstream sees the disconnect and stops generating.
        try:
            events = chat_events(response.aiter_lines(), model=model, vendor=self._vendor)
            async with aclosing(events):
                async for event in events:
                    yield event
        finally:
            await response.aclose()
