"""The `LLMProvider` seam: chat messages in, typed stream events out, our own errors."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal, NotRequired, Protocol, TypedDict

from pydantic import JsonValue

from app.protocol import ErrorCode

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


class LLMError(Exception):
    """A model call failed; providers translate their SDK's errors into this, once."""

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


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
    ) -> AsyncGenerator[LLMEvent, None]:
        """Stream one model call; closing the iterator closes the upstream request."""
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
