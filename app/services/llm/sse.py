"""The chat-completions stream, read once for every vendor: httpx lines in, our events out.

Each `data:` payload is parsed and checked in one step by pydantic-core against the few fields
we read (`_Chunk`): about as fast as `orjson.loads` alone, and a payload that is not JSON or not
a chunk's shape fails there. Every way a 200 body can be unreadable (invalid JSON, a wrong
shape, a body that ends before the answer's end) becomes an `LLMError` of kind `unavailable`,
never an exception of ours; an error event becomes an `ErrorAnswer` for the vendor's error map.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final

from pydantic import JsonValue, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic reads TypedDicts from here on Python 3.11

from app.services.llm.base import Finished, LLMEvent, TextDelta
from app.services.llm.chat_wire import ToolCallAssembler, ToolCallFragment
from app.services.llm.vendor import ErrorAnswer, Vendor

DONE: Final = "[DONE]"


class _Function(TypedDict, total=False):
    name: str | None
    arguments: str | None


class _ToolCall(TypedDict, total=False):
    index: int
    id: str | None
    function: _Function | None


class _Delta(TypedDict, total=False):
    content: str | None
    tool_calls: list[_ToolCall] | None


class _Choice(TypedDict, total=False):
    delta: _Delta | None
    finish_reason: str | None


class _XGroq(TypedDict, total=False):
    usage: dict[str, JsonValue] | None
    error: JsonValue


class _Chunk(TypedDict, total=False):
    """The fields of a `chat.completion.chunk` we read; any other field is ignored."""

    choices: list[_Choice] | None
    usage: dict[str, JsonValue] | None
    x_groq: _XGroq | None
    error: JsonValue


# The core validator itself: `TypeAdapter.validate_json` adds a Python call per chunk.
_CHUNK: Final = TypeAdapter(_Chunk).validator


class SseEvents:
    """Server-sent events from a body's lines, fed one line at a time (an object, not one more
    generator to leave suspended when the reading stops)."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str | None, str] | None:
        """`(event name, data)` once `line` ends an event; else None."""
        if line.startswith("data:"):
            self._data.append(line[5:].lstrip())
        elif line.startswith("event:"):
            self._event = line[6:].strip()
        elif not line and self._data:
            event = (self._event, "\n".join(self._data))
            self._event, self._data = None, []
            return event
        return None


def _decoded(payload: str, event: str | None, vendor: Vendor) -> _Chunk | ErrorAnswer:
    """The chunk, or the error answer an error event carries; unreadable: an `LLMError`."""
    try:
        chunk: _Chunk = _CHUNK.validate_json(payload)
    except ValidationError as e:
        raise vendor.unreadable(_first_problem(e)) from e
    error = chunk.get("error")
    if not error and event != "error":
        return chunk
    if isinstance(error, dict):
        status = error.get("status_code")
        return ErrorAnswer(status if isinstance(status, int) else None, error)
    return ErrorAnswer(None, {"message": str(error or "error in the stream")})


def _first_problem(error: ValidationError) -> str:
    problem = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(map(str, problem["loc"]))
    return f"{where}: {problem['msg']}" if where else problem["msg"]


class _Answer:
    """What the chunks of one answer said, beyond its text: tool calls, finish reason, usage."""

    def __init__(self, vendor: Vendor) -> None:
        self._vendor = vendor
        self._calls = ToolCallAssembler()
        self._finish_reason: str | None = None
        self._usage: dict[str, JsonValue] | None = None

    def take(self, chunk: _Chunk) -> str | None:
        """Note what `chunk` says; its text, if any."""
        x_groq = (chunk.get("x_groq") or {}) if self._vendor.groq_extensions else {}
        if stopped := x_groq.get("error"):
            raise self._vendor.stopped(stopped)
        usage = chunk.get("usage") or x_groq.get("usage")
        if usage:
            self._usage = {key: value for key, value in usage.items() if value is not None}
        for choice in (chunk.get("choices") or ())[:1]:
            delta = choice.get("delta") or {}
            for raw in delta.get("tool_calls") or ():
                function = raw.get("function") or {}
                fragment = ToolCallFragment(
                    raw.get("index", 0),
                    raw.get("id"),
                    function.get("name"),
                    function.get("arguments"),
                )
                self._calls.add(fragment)
            self._finish_reason = choice.get("finish_reason") or self._finish_reason
            return delta.get("content")
        return None

    def end(self, model: str) -> list[LLMEvent]:
        """The whole tool calls, then `Finished`; an answer without a finish reason is cut."""
        if self._finish_reason is None:
            raise self._vendor.ended_early()
        finished = Finished(finish_reason=self._finish_reason, usage=self._usage, model=model)
        return [*self._calls.finish(), finished]


async def chat_events(
    lines: AsyncIterator[str], *, model: str, vendor: Vendor
) -> AsyncGenerator[LLMEvent, None]:
    """Our events from the body's lines: text, then whole tool calls, then `Finished`."""
    sse, answer = SseEvents(), _Answer(vendor)
    done, failure = False, None
    async for line in lines:
        # Past its last word (`[DONE]`, an error), the body is read to its end, which follows
        # at once: left suspended, httpx's generators beneath `lines` would be closed by the
        # collector, in tasks.
        if done or (sse_event := sse.feed(line)) is None:
            continue
        name, payload = sse_event
        if payload == DONE:
            done = True
            continue
        chunk = _decoded(payload, name, vendor)
        if isinstance(chunk, ErrorAnswer):
            done, failure = True, chunk
        elif text := answer.take(chunk):
            yield TextDelta(text)
    if failure is not None:
        raise failure
    for last in answer.end(model):
        yield last
