"""Turns a session's stored events into the chat messages a model is sent, always valid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

from pydantic_core import to_json

from app.protocol import (
    AssistantMessageEvent,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)
from app.services.llm.base import AssistantMessage, ChatMessage, ToolCallMessagePart

INTERRUPTED_TOOL_RESULT = '{"error": "the tool did not finish (interrupted)"}'


def tool_result_content(event: ToolResultEvent) -> str:
    """What the model reads as a tool's answer."""
    if event.ok:
        return to_json(event.result).decode()
    return to_json({"error": event.error}).decode()


def _call_part(event: ToolCallEvent) -> ToolCallMessagePart:
    arguments = event.raw_arguments
    if arguments is None:
        arguments = to_json(event.arguments).decode()
    return {
        "id": event.call_id,
        "type": "function",
        "function": {"name": event.name, "arguments": arguments},
    }


class _MessageBuilder:
    """Accumulates messages; repairs a tool call left without a result (crash, kill, cancel)."""

    def __init__(self, system_prompt: str) -> None:
        self.messages: list[ChatMessage] = [{"role": "system", "content": system_prompt}]
        self._open_calls: dict[str, None] = {}
        self._call_message: AssistantMessage | None = None

    def add(self, event: StoredEvent) -> None:
        if isinstance(event, ToolCallEvent):
            self._add_call(event)
        elif isinstance(event, ToolResultEvent):
            self._add_result(event)
        elif isinstance(event, UserMessageEvent):
            self._close_calls()
            self.messages.append({"role": "user", "content": event.text})
        elif isinstance(event, AssistantMessageEvent):
            self._close_calls()
            if event.text:
                self.messages.append({"role": "assistant", "content": event.text})
        else:
            assert_never(event)

    def _add_call(self, event: ToolCallEvent) -> None:
        if self._call_message is None:
            self._close_calls()
            self._call_message = {"role": "assistant", "content": None, "tool_calls": []}
            self.messages.append(self._call_message)
        self._call_message["tool_calls"].append(_call_part(event))
        self._open_calls[event.call_id] = None

    def _add_result(self, event: ToolResultEvent) -> None:
        if event.call_id not in self._open_calls:
            return  # a result without its call would make the request invalid
        del self._open_calls[event.call_id]
        self._call_message = None
        self.messages.append(
            {"role": "tool", "tool_call_id": event.call_id, "content": tool_result_content(event)}
        )

    def _close_calls(self) -> None:
        for call_id in self._open_calls:
            self.messages.append(
                {"role": "tool", "tool_call_id": call_id, "content": INTERRUPTED_TOOL_RESULT}
            )
        self._open_calls.clear()
        self._call_message = None

    def finish(self) -> list[ChatMessage]:
        self._close_calls()
        return self.messages


def superseded_responses(events: Sequence[StoredEvent]) -> set[str]:
    """The ids of responses a later one replaced (regenerated answers)."""
    return {
        event.supersedes
        for event in events
        if isinstance(event, AssistantMessageEvent) and event.supersedes is not None
    }


def current_events(
    events: Sequence[StoredEvent], *, also_superseded: str | None = None
) -> Sequence[StoredEvent]:
    """The events without those of replaced responses (`also_superseded`: one being replaced
    right now, whose replacement is not stored yet): what the model and the summaries see."""
    superseded = superseded_responses(events)
    if also_superseded is not None:
        superseded.add(also_superseded)
    if not superseded:
        return events
    return [
        event
        for event in events
        if isinstance(event, UserMessageEvent) or event.response_id not in superseded
    ]


def build_messages(system_prompt: str, events: Sequence[StoredEvent]) -> list[ChatMessage]:
    """System prompt, then the conversation, with every tool call closed by a result."""
    builder = _MessageBuilder(system_prompt)
    for event in events:
        builder.add(event)
    return builder.finish()
