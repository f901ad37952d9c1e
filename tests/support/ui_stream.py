"""The AI SDK's UI message stream as a test reads it: SSE events, checked as they come."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

# Every chunk type of the `ai` package's `uiMessageChunkSchema` this server may send.
CHUNK_TYPES = {
    "start",
    "start-step",
    "text-start",
    "text-delta",
    "text-end",
    "tool-input-available",
    "tool-output-available",
    "tool-output-error",
    "finish-step",
    "finish",
    "error",
    "abort",
    "message-metadata",
}

Chunk = dict[str, Any]


@dataclass
class UIStream:
    """The chunks of one UI message stream, and whether `[DONE]` closed it."""

    chunks: list[Chunk] = field(default_factory=list)
    done_marker: bool = False

    def types(self) -> list[str]:
        return [chunk["type"] for chunk in self.chunks]

    def text(self) -> str:
        return "".join(c["delta"] for c in self.chunks if c["type"] == "text-delta")

    def first(self, chunk_type: str) -> Chunk:
        return next(c for c in self.chunks if c["type"] == chunk_type)


def parse_event(data: str, stream: UIStream) -> None:
    """One SSE `data:` payload: `[DONE]` (last), or a JSON object of a known chunk type."""
    assert not stream.done_marker, f"data after [DONE]: {data!r}"
    if data == "[DONE]":
        stream.done_marker = True
        return
    chunk = orjson.loads(data)
    assert isinstance(chunk, dict), f"a chunk is not a JSON object: {data!r}"
    assert chunk.get("type") in CHUNK_TYPES, f"unknown chunk type: {data!r}"
    stream.chunks.append(chunk)


async def read_ui_stream(
    response: httpx.Response, *, until: str | None = None, into: UIStream | None = None
) -> UIStream:
    """Read the SSE body (to its end, or until a chunk of type `until`) into `into` (or a new
    stream) as it comes, checking the framing: `data:` lines and comments only."""
    assert response.status_code == 200, response.text
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = into if into is not None else UIStream()
    async for line in response.aiter_lines():
        if line == "" or line.startswith(":"):
            continue  # an event's end, or a keep-alive comment
        assert line.startswith("data: "), f"not an SSE data line: {line!r}"
        parse_event(line.removeprefix("data: "), stream)
        if until is not None and stream.chunks and stream.chunks[-1]["type"] == until:
            return stream
    return stream


def assert_well_formed(stream: UIStream) -> None:
    """The protocol's order: start first, [DONE] last, exactly one finish or abort (the last
    chunk), steps balanced, every text part opened before its deltas and closed."""
    types = stream.types()
    assert stream.done_marker, "the stream did not end with [DONE]"
    assert types[0] == "start", types
    assert sum(t in ("finish", "abort") for t in types) == 1, types
    assert types[-1] in ("finish", "abort"), types
    assert types.count("start-step") == types.count("finish-step"), types
    open_texts: set[str] = set()
    for chunk in stream.chunks:
        if chunk["type"] == "text-start":
            open_texts.add(chunk["id"])
        elif chunk["type"] == "text-delta":
            assert chunk["id"] in open_texts, f"a delta of a text part not open: {chunk}"
        elif chunk["type"] == "text-end":
            open_texts.remove(chunk["id"])
    assert not open_texts, f"text parts left open: {open_texts}"


def user_message(text: str, message_id: str) -> Chunk:
    """A UIMessage as useChat sends it."""
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def chat_body(chat_id: str, *messages: Chunk, **extra: Any) -> Chunk:
    return {"id": chat_id, "messages": list(messages), "trigger": "submit-message", **extra}
