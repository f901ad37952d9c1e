"""Our messages in the chat-completions wire format, and the pieces of that format's stream.

Groq, OpenAI-compatible servers and llama.cpp's server all speak it: messages by `role`, tool
calls streamed as deltas under an `index`, errors as `{"error": {"message", "type", "code"}}`.
This module is the only place that knows how our messages look on that wire.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never, cast

from app.services.llm.base import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    SystemPart,
    TextPart,
    ToolCallPart,
    ToolCallRequest,
    ToolReturnPart,
    UserPart,
)

WireMessage = dict[str, Any]


def wire_messages(messages: Sequence[ChatMessage]) -> list[WireMessage]:
    """Each request part as its own message (system, user, tool); each response as one
    assistant message with its text and its tool calls."""
    wire: list[WireMessage] = []
    for message in messages:
        if isinstance(message, ModelRequest):
            wire.extend(map(_request_part, message.parts))
        elif isinstance(message, ModelResponse):
            wire.append(_assistant(message))
        else:
            assert_never(message)
    return wire


def _request_part(part: SystemPart | UserPart | ToolReturnPart) -> WireMessage:
    if isinstance(part, SystemPart):
        return {"role": "system", "content": part.content}
    if isinstance(part, UserPart):
        return {"role": "user", "content": part.content}
    if isinstance(part, ToolReturnPart):
        return {"role": "tool", "tool_call_id": part.call_id, "content": part.content}
    assert_never(part)


def _assistant(message: ModelResponse) -> WireMessage:
    text: list[str] = []
    calls: list[WireMessage] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            text.append(part.content)
        elif isinstance(part, ToolCallPart):
            function = {"name": part.name, "arguments": part.arguments}
            calls.append({"id": part.call_id, "type": "function", "function": function})
        else:
            assert_never(part)
    wire: WireMessage = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        wire["tool_calls"] = calls
    return wire


@dataclass(frozen=True, slots=True)
class ToolCallFragment:
    """One tool-call delta: `index` says which call, `id` starts a call, the rest adds to it."""

    index: int
    id: str | None
    name: str | None
    arguments: str | None


@dataclass(slots=True)
class _PartialCall:
    call_id: str
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def request(self) -> ToolCallRequest:
        return ToolCallRequest(
            call_id=self.call_id, name=self.name, arguments="".join(self.arguments)
        )


class ToolCallAssembler:
    """Builds whole tool calls from stream deltas.

    Groq sends each call whole in one delta; OpenAI-style servers send the arguments in
    fragments under the same `index`. A new `id` at a known index starts a new call.
    """

    def __init__(self) -> None:
        self._open: dict[int, _PartialCall] = {}
        self._done: list[ToolCallRequest] = []

    def add(self, delta: ToolCallFragment) -> None:
        """Take one delta: a new call, or more of the call at its index."""
        current = self._open.get(delta.index)
        if current is None or (delta.id and delta.id != current.call_id):
            if current is not None:
                self._done.append(current.request())
            current = _PartialCall(call_id=delta.id or f"call_{delta.index}")
            self._open[delta.index] = current
        current.name += delta.name or ""
        if delta.arguments:
            current.arguments.append(delta.arguments)

    def finish(self) -> list[ToolCallRequest]:
        """Every call seen, in order; the assembler is empty afterwards."""
        calls = self._done + [self._open[index].request() for index in sorted(self._open)]
        self._open.clear()
        self._done = []
        return calls


def error_details(body: object) -> Mapping[str, Any]:
    """The inner `{"message", "code", ...}` object of an error body, however it is wrapped."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            return cast(Mapping[str, Any], inner)
    return {}
