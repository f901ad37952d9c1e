"""One response's frames as the AI SDK's UI message stream chunks (`ai` 7.x, protocol v1).

The chunk shapes are those of the `ai` package's `uiMessageChunkSchema` (its
docs/04-ai-sdk-ui/50-stream-protocol.mdx): `start`, `start-step`, `text-start` / `text-delta` /
`text-end`, `tool-input-available`, `tool-output-available` / `tool-output-error`,
`finish-step`, then `finish` (with `error` before it when the response failed) or `abort`
(both after a `message-metadata` with the stored status).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.protocol import (
    ResponseDelta,
    ResponseDone,
    ResponseStarted,
    ResponseStatus,
    ServerFrame,
    ToolCallEvent,
    ToolResultEvent,
)

Chunk = dict[str, Any]

# The model's finish reasons (OpenAI wire names, and ours) as the AI SDK's `finishReason`.
_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "content_filter": "content-filter",
    "error": "error",
    "cancelled": "interrupted",
}


def ui_finish_reason(finish_reason: str) -> str:
    return _FINISH_REASONS.get(finish_reason, "other")


def finish_metadata(done: ResponseDone) -> dict[str, Any]:
    """What `useChat` keeps as the assistant message's `metadata` at its end."""
    metadata: dict[str, Any] = {
        "model": done.model,
        "status": done.status.value,
        "finishReason": done.finish_reason,
        "usage": done.usage,
        "seq": done.seq,
    }
    if done.error is not None:
        metadata["error"] = {"code": done.error.code.value, "message": done.error.message}
    if done.supersedes is not None:
        metadata["supersedes"] = done.supersedes
    return metadata


class UIStreamEncoder:
    """Encodes the frames of one response, in order, as UI message stream chunks.

    A step is one model round: a tool result closes it, so the text or tool call that comes
    next opens the following step. The stored answer is the text of all steps together.
    """

    def __init__(self, *, session_id: str, model: str) -> None:
        self._session_id = session_id
        self._model = model
        self._text_id: str | None = None
        self._texts = 0
        self._step_has_results = False
        self._started = False
        self.ended = False

    def encode(self, frame: ServerFrame) -> list[Chunk]:
        if self.ended:
            return []
        if isinstance(frame, ResponseStarted):
            return self._start(frame)
        if isinstance(frame, ResponseDelta):
            return [*self._next_step(), *self._open_text(frame.response_id), self._delta(frame)]
        if isinstance(frame, ToolCallEvent):
            return [*self._next_step(), *self._close_text(), _tool_input(frame)]
        if isinstance(frame, ToolResultEvent):
            self._step_has_results = True
            return [_tool_output(frame)]
        if isinstance(frame, ResponseDone):
            return self._done(frame)
        return []  # acknowledgements, status, errors and pongs have no UI chunk

    def interrupted(self, reason: str) -> list[Chunk]:
        """The stream ends before the response did (its session was deleted, or moved to
        another connection): the reason, then `abort` (the answer may go on, stored)."""
        if self.ended:
            return []
        self.ended = True
        step_end = [{"type": "finish-step"}] if self._started else []
        return [
            *self._close_text(),
            *step_end,
            {"type": "error", "errorText": reason},
            {"type": "abort", "reason": reason},
        ]

    def _start(self, frame: ResponseStarted) -> list[Chunk]:
        self._started = True
        created_at = frame.created_at or datetime.now(UTC)
        metadata = {
            "model": self._model,
            "createdAt": created_at.isoformat(),
            "sessionId": self._session_id,
        }
        return [
            {"type": "start", "messageId": frame.response_id, "messageMetadata": metadata},
            {"type": "start-step"},
        ]

    def _next_step(self) -> list[Chunk]:
        if not self._step_has_results:
            return []
        self._step_has_results = False
        return [*self._close_text(), {"type": "finish-step"}, {"type": "start-step"}]

    def _open_text(self, response_id: str) -> list[Chunk]:
        if self._text_id is not None:
            return []
        self._texts += 1
        self._text_id = f"{response_id}-text-{self._texts}"
        return [{"type": "text-start", "id": self._text_id}]

    def _delta(self, frame: ResponseDelta) -> Chunk:
        return {"type": "text-delta", "id": self._text_id, "delta": frame.text}

    def _close_text(self) -> list[Chunk]:
        if self._text_id is None:
            return []
        chunk = {"type": "text-end", "id": self._text_id}
        self._text_id = None
        return [chunk]

    def _done(self, done: ResponseDone) -> list[Chunk]:
        self.ended = True
        chunks = [*self._close_text(), {"type": "finish-step"}]
        # useChat keeps no metadata of an `abort`, and stops reading at an `error`: the stored
        # status comes first, so the live message says it was cancelled or failed.
        status = {"type": "message-metadata", "messageMetadata": finish_metadata(done)}
        if done.status is ResponseStatus.CANCELLED:
            return [*chunks, status, {"type": "abort", "reason": "cancelled"}]
        if done.status is ResponseStatus.FAILED and done.error is not None:
            chunks += [status, {"type": "error", "errorText": done.error.message}]
        finish = {
            "type": "finish",
            "finishReason": ui_finish_reason(done.finish_reason),
            "messageMetadata": finish_metadata(done),
        }
        return [*chunks, finish]


def _tool_input(call: ToolCallEvent) -> Chunk:
    return {
        "type": "tool-input-available",
        "toolCallId": call.call_id,
        "toolName": call.name,
        "input": call.arguments if call.raw_arguments is None else call.raw_arguments,
    }


def _tool_output(result: ToolResultEvent) -> Chunk:
    if result.ok:
        return {
            "type": "tool-output-available",
            "toolCallId": result.call_id,
            "output": result.result,
        }
    return {
        "type": "tool-output-error",
        "toolCallId": result.call_id,
        "errorText": result.error or "the tool failed",
    }
