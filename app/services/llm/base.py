"""The `LLMProvider` seam: chat messages in, typed stream events out, our own errors."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal, NotRequired, Protocol, TypedDict

from pydantic import JsonValue

from app.protocol import ErrorCode
from app.services.storable import storable_text

# ---------------------------------------------------------------- messages (OpenAI chat format)


class FunctionCall(TypedDict):
    name: str
    arguments: str


class ToolCallMessagePart(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class SystemMessage(TypedDict):
    role: Literal["system"]
    content: str


class UserMessage(TypedDict):
    role: Literal["user"]
    content: str


class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: str | None
    tool_calls: NotRequired[list[ToolCallMessagePart]]


class ToolMessage(TypedDict):
    role: Literal["tool"]
    tool_call_id: str
    content: str


ChatMessage = SystemMessage | UserMessage | AssistantMessage | ToolMessage


class FunctionDefinition(TypedDict):
    name: str
    description: str
    parameters: dict[str, JsonValue]


class ToolDefinition(TypedDict):
    type: Literal["function"]
    function: FunctionDefinition


# ---------------------------------------------------------------- stream events


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Answer text (never reasoning)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """One complete tool call; `arguments` is the model's raw JSON text."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of one model call."""

    finish_reason: str
    usage: dict[str, JsonValue] | None
    model: str


LLMEvent = TextDelta | ToolCallRequest | Finished


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """Progress of a model call that is neither text nor a tool call; callers may ignore it.

    `queued`: the call waits for a model that answers one call at a time (`ahead` calls first).
    `started`: a call that had been queued now runs.
    """

    state: Literal["queued", "started"]
    ahead: int
    message: str


StatusListener = Callable[[ModelStatus], Awaitable[None]]


class LLMError(Exception):
    """A model call failed; providers translate their SDK's errors into this, once."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retryable: bool = False,
        upstream_code: str | None = None,
        upstream_status: int | None = None,
    ) -> None:
        # Upstream error texts end up in stored `assistant.message` events: storable like any
        # model output (docs/reliability.md).
        message = storable_text(message)
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        # The provider's own error code (e.g. Groq's `context_length_exceeded`), for recovery.
        self.upstream_code = upstream_code
        # The upstream's HTTP status (or the one an error inside a 200 stream meant): fallbacks.
        self.upstream_status = upstream_status


CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


class LLMProvider(Protocol):
    """A chat model that streams typed events."""

    @property
    def model(self) -> str:
        """The model that answers by default (shown to clients)."""
        ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        model: str | None = None,
        on_status: StatusListener | None = None,
    ) -> AsyncGenerator[LLMEvent, None]:
        """Stream one model call; closing the iterator closes the upstream request.

        `on_status` hears about waiting (e.g. for the local model, which answers one call at a
        time) before any event; providers that never wait never call it.
        """
        ...

    async def aclose(self) -> None: ...


async def complete_text(
    provider: LLMProvider, messages: Sequence[ChatMessage], *, model: str | None = None
) -> str:
    """The whole answer text of one tool-less model call."""
    parts: list[str] = []
    async with aclosing(provider.stream(messages, model=model)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                parts.append(event.text)
    return "".join(parts)
