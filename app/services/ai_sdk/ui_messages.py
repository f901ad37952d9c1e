"""Stored events as the AI SDK's UIMessages (what `useChat` starts from), and a stored
response as the frames that replay it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.protocol import (
    AssistantMessageEvent,
    ResponseDelta,
    ResponseFrame,
    ResponseStarted,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)
from app.services.ai_sdk.ui_stream import finish_metadata
from app.services.history import current_events
from app.services.runner import done_frame

UIMessage = dict[str, Any]


@dataclass(slots=True)
class _Answer:
    """An assistant UIMessage being assembled from its response's stored events."""

    response_id: str
    tool_parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def call(self, event: ToolCallEvent) -> None:
        self.tool_parts[event.call_id] = {
            "type": f"tool-{event.name}",
            "toolCallId": event.call_id,
            "state": "input-available",
            "input": event.arguments if event.raw_arguments is None else event.raw_arguments,
        }

    def result(self, event: ToolResultEvent) -> None:
        part = self.tool_parts.get(event.call_id)
        if part is None:
            return
        if event.ok:
            part.update(state="output-available", output=event.result)
        else:
            part.update(state="output-error", errorText=event.error or "the tool failed")

    def message(self, end: AssistantMessageEvent, session_id: str) -> UIMessage:
        # The stored answer is the text of every round together: it follows the tool calls,
        # in a step of its own when there were any.
        parts: list[dict[str, Any]] = [{"type": "step-start"}, *self.tool_parts.values()]
        if end.text:
            if self.tool_parts:
                parts.append({"type": "step-start"})
            parts.append({"type": "text", "text": end.text, "state": "done"})
        metadata = finish_metadata(done_frame(end))
        metadata["createdAt"] = end.created_at.isoformat()
        metadata["sessionId"] = session_id
        return {"id": end.response_id, "role": "assistant", "metadata": metadata, "parts": parts}


def ui_messages(events: Sequence[StoredEvent], *, session_id: str) -> list[UIMessage]:
    """The conversation as UIMessages, oldest first: user messages and finished answers
    (an answer still running is left out: a resume streams it; replaced answers too)."""
    messages: list[UIMessage] = []
    answers: dict[str, _Answer] = {}
    for event in current_events(events):
        if isinstance(event, UserMessageEvent):
            messages.append(_user_message(event))
        elif isinstance(event, AssistantMessageEvent):
            answer = answers.pop(event.response_id, None) or _Answer(event.response_id)
            messages.append(answer.message(event, session_id))
        elif isinstance(event, ToolCallEvent | ToolResultEvent):
            answer = answers.setdefault(event.response_id, _Answer(event.response_id))
            if isinstance(event, ToolCallEvent):
                answer.call(event)
            else:
                answer.result(event)
    return messages


def _user_message(event: UserMessageEvent) -> UIMessage:
    return {
        "id": event.id,
        "role": "user",
        "metadata": {"createdAt": event.created_at.isoformat(), "seq": event.seq},
        "parts": [{"type": "text", "text": event.text}],
    }


def stored_answer_frames(events: Sequence[StoredEvent], message_seq: int) -> list[ResponseFrame]:
    """The frames of the stored answer to the user message at `message_seq` (empty when it
    has none): what a resent message gets instead of a second answer."""
    later = [event for event in current_events(events) if event.seq > message_seq]
    end = next((e for e in later if isinstance(e, AssistantMessageEvent)), None)
    if end is None:
        return []
    steps: list[ToolCallEvent | ToolResultEvent] = [
        event
        for event in later
        if isinstance(event, ToolCallEvent | ToolResultEvent)
        and event.response_id == end.response_id
    ]
    # Its start is not stored: its first stored event is the nearest time to it.
    began = steps[0].created_at if steps else end.created_at
    started = ResponseStarted(response_id=end.response_id, created_at=began)
    frames: list[ResponseFrame] = [started, *steps]
    if end.text:
        frames.append(ResponseDelta(response_id=end.response_id, text=end.text))
    frames.append(done_frame(end))
    return frames
