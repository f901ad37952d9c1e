"""The `LLMProvider` seam: our own messages in, our own stream events out, our own errors.

Messages and events are provider-neutral tagged dataclasses, after pydantic-ai's messages: a
conversation is a list of `ModelRequest`s (what we send: system, user and tool-return parts) and
`ModelResponse`s (what the model said: text and tool-call parts), each part tagged by its
`part_kind`. Only the adapters turn them into a wire format (`chat_wire.wire_messages` for the
chat-completions servers, `local_prompt.render_prompt` for the local model). Plain dataclasses
with slots, as pydantic-ai's are, not pydantic models: the history is rebuilt for every model
call, and 20 messages took 17-21 µs to build as dataclasses, 74-120 µs as pydantic models
(docs/performance.md).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol, TypedDict

from pydantic import JsonValue

from app.services.storable import storable_text

# ---------------------------------------------------------------- messages


@dataclass(slots=True)
class SystemPart:
    """Instructions to the model (the system prompt, the rolling summary)."""

    content: str
    part_kind: Literal["system"] = "system"


@dataclass(slots=True)
class UserPart:
    """What the person wrote."""

    content: str
    part_kind: Literal["user"] = "user"


@dataclass(slots=True)
class ToolReturnPart:
    """A tool's answer to the call `call_id`, as the model reads it (JSON text)."""

    call_id: str
    name: str
    content: str
    part_kind: Literal["tool-return"] = "tool-return"


@dataclass(slots=True)
class TextPart:
    """Text the model answered."""

    content: str
    part_kind: Literal["text"] = "text"


@dataclass(slots=True)
class ToolCallPart:
    """A tool call the model made; `arguments` is its raw JSON text."""

    call_id: str
    name: str
    arguments: str
    part_kind: Literal["tool-call"] = "tool-call"


RequestPart = SystemPart | UserPart | ToolReturnPart
ResponsePart = TextPart | ToolCallPart


@dataclass(slots=True)
class ModelRequest:
    """What we send the model in one turn of the conversation."""

    parts: list[RequestPart]
    kind: Literal["request"] = "request"


@dataclass(slots=True)
class ModelResponse:
    """What the model answered in one turn: text, tool calls, or both."""

    parts: list[ResponsePart]
    kind: Literal["response"] = "response"


ChatMessage = ModelRequest | ModelResponse


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
    event_kind: Literal["text-delta"] = "text-delta"


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """One complete tool call; `arguments` is the model's raw JSON text."""

    call_id: str
    name: str
    arguments: str
    event_kind: Literal["tool-call"] = "tool-call"


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of one model call."""

    finish_reason: str
    usage: dict[str, JsonValue] | None
    model: str
    event_kind: Literal["finished"] = "finished"


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


# ---------------------------------------------------------------- errors


class LLMErrorKind(StrEnum):
    """What went wrong with a model call, whoever the provider; callers map it to their codes."""

    RATE_LIMITED = "rate_limited"  # the upstream asks us to slow down (429, capacity)
    UNAVAILABLE = "unavailable"  # unreachable, failing (5xx), stalled, or its stream unreadable
    UNAUTHORIZED = "unauthorized"  # the key was refused
    MODEL_NOT_FOUND = "model_not_found"  # the model is unknown or retired
    CONTEXT_TOO_LONG = "context_too_long"  # the request is longer than the model's window
    REFUSED = "refused"  # any other refusal of the request (a bad request)
    FAILED = "failed"  # the model answered nothing usable (a local model's crash, say)


class LLMError(Exception):
    """A model call failed; providers translate their SDK's errors into this, once."""

    def __init__(
        self,
        kind: LLMErrorKind,
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
        self.kind = kind
        self.message = message
        self.retryable = retryable
        # The provider's own error code (e.g. Groq's `context_length_exceeded`), for traces.
        self.upstream_code = upstream_code
        # The upstream's HTTP status (or the one an error inside a 200 stream meant): fallbacks.
        self.upstream_status = upstream_status


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
