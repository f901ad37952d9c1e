"""What a response runs with and through: its output and prompt source (the narrow view it has
of its conversation), its settings, and its states with the changes they allow."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from app.protocol import ServerFrame, StoredEvent
from app.services.llm.base import ChatMessage, ToolDefinition


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
