"""What a response runs with and through: its output and prompt source (the narrow view it has
of its conversation), its settings, its states with the changes they allow, how model failures
reach the client, and the small pure helpers of its events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import orjson
from pydantic import JsonValue

from app.protocol import (
    AssistantMessageEvent,
    ErrorCode,
    ResponseDone,
    ServerFrame,
    StoredEvent,
    ToolCallEvent,
)
from app.services.llm.base import ChatMessage, LLMError, LLMErrorKind, ToolDefinition
from app.services.storable import storable_json


class ResponseOutput(Protocol):
    """Where a response's events go: the one thing it needs of its conversation."""

    def next_seq(self) -> int:
        """The session's next seq (events are numbered in the order they happen)."""
        ...

    def record(self, event: StoredEvent) -> None:
        """Append to the history and queue the write (off the streaming path)."""
        ...

    async def send(self, frame: ServerFrame) -> None:
        """To the client, if one is attached (and to anyone joined to the response)."""
        ...


class PromptSource(Protocol):
    async def __call__(self, tools: Sequence[ToolDefinition], *, hard: bool) -> list[ChatMessage]:
        """The messages of the next model request, within the context budget."""
        ...


@dataclass(frozen=True, slots=True)
class ResponseConfig:
    """Settings a response runs with."""

    max_tool_rounds: int
    tool_timeout_s: float
    # How long a call waits for the person's approval before it is denied as timed out.
    approval_timeout_s: float = 600.0


class ResponseState(Enum):
    """Where a response is. Every change goes through `ResponseRunner._move`, which refuses one
    the table below does not allow (a bug, not a client's doing)."""

    STARTING = "starting"  # created; `response.started` not sent yet
    STREAMING = "streaming"  # a model round streams
    AWAITING_APPROVAL = "awaiting_approval"  # the round's calls wait for the person's answers
    RUNNING_TOOLS = "running_tools"  # the round's tool calls run
    CANCELLING = "cancelling"  # cancel asked: no tool starts, the work is being stopped
    FINISHING = "finishing"  # open calls closed, the assistant message recorded, done sent
    DONE = "done"  # its one `response.done` is sent


RESPONSE_TRANSITIONS: dict[ResponseState, frozenset[ResponseState]] = {
    # To RUNNING_TOOLS at once: a response that runs a round left waiting by a stopped process.
    ResponseState.STARTING: frozenset(
        {
            ResponseState.STREAMING,
            ResponseState.RUNNING_TOOLS,
            ResponseState.CANCELLING,
            ResponseState.FINISHING,
        }
    ),
    ResponseState.STREAMING: frozenset(
        {
            ResponseState.AWAITING_APPROVAL,
            ResponseState.RUNNING_TOOLS,
            ResponseState.CANCELLING,
            ResponseState.FINISHING,
        }
    ),
    # To FINISHING without running: a shutdown pauses it (the calls stay pending in the log).
    ResponseState.AWAITING_APPROVAL: frozenset(
        {ResponseState.RUNNING_TOOLS, ResponseState.CANCELLING, ResponseState.FINISHING}
    ),
    ResponseState.RUNNING_TOOLS: frozenset(
        {ResponseState.STREAMING, ResponseState.CANCELLING, ResponseState.FINISHING}
    ),
    ResponseState.CANCELLING: frozenset({ResponseState.FINISHING}),
    ResponseState.FINISHING: frozenset({ResponseState.DONE}),
    ResponseState.DONE: frozenset(),
}


# What a client is told of a model failure, by its kind.
LLM_ERROR_CODES: dict[LLMErrorKind, ErrorCode] = {
    LLMErrorKind.RATE_LIMITED: ErrorCode.LLM_RATE_LIMITED,
    LLMErrorKind.UNAVAILABLE: ErrorCode.LLM_UNAVAILABLE,
    LLMErrorKind.UNAUTHORIZED: ErrorCode.LLM_UNAVAILABLE,
    LLMErrorKind.MODEL_NOT_FOUND: ErrorCode.LLM_ERROR,
    LLMErrorKind.CONTEXT_TOO_LONG: ErrorCode.LLM_ERROR,
    LLMErrorKind.REFUSED: ErrorCode.LLM_ERROR,
    LLMErrorKind.FAILED: ErrorCode.LLM_ERROR,
}


class ToolRoundsExceeded(Exception):
    """The model kept calling tools past `MAX_TOOL_ROUNDS`."""


def add_usage(
    total: dict[str, JsonValue] | None, more: dict[str, JsonValue] | None
) -> dict[str, JsonValue] | None:
    if more is None:
        return total
    if total is None:
        return dict(more)
    summed = dict(total)
    for key, value in more.items():
        known = summed.get(key)
        both_numbers = isinstance(value, int | float) and isinstance(known, int | float)
        summed[key] = known + value if both_numbers else value  # type: ignore[operator]
    return summed


def storable_object(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    storable = storable_json(value)
    assert isinstance(storable, dict)  # a dict stays a dict
    return storable


def parse_arguments(raw: str) -> dict[str, JsonValue] | None:
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def done_frame(message: AssistantMessageEvent) -> ResponseDone:
    """The `response.done` that announces a stored assistant message."""
    return ResponseDone(
        seq=message.seq,
        response_id=message.response_id,
        status=message.status,
        text=message.text,
        finish_reason=message.finish_reason,
        usage=message.usage,
        error=message.error,
        model=message.model,
        supersedes=message.supersedes,
    )


class PromptTooLong(Exception):
    """The upstream refused the request as longer than the model's window."""

    def __init__(self, refusal: LLMError) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass(slots=True)
class ResponseProgress:
    """What a response has produced so far (its stored answer is made of it)."""

    text: list[str] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: dict[str, JsonValue] | None = None
    model: str = ""
    open_calls: dict[str, ToolCallEvent] = field(default_factory=dict)
