"""Pieces of the OpenAI-style chat-completions wire format shared by the adapters that speak it.

Groq, OpenAI-compatible servers and llama.cpp all stream the same shapes: tool calls as deltas
under an `index`, and errors as `{"error": {"message", "type", "code", ...}}` bodies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from app.services.llm.base import ChatMessage, ToolCallRequest, ToolDefinition


class FunctionFragment(Protocol):
    """The `function` part of a tool-call delta (any SDK's model, or our own dataclass)."""

    @property
    def name(self) -> str | None: ...

    @property
    def arguments(self) -> str | None: ...


class ToolCallFragment(Protocol):
    """One tool-call delta: `index` says which call, `id` starts a call, `function` adds to it."""

    @property
    def index(self) -> int: ...

    @property
    def id(self) -> str | None: ...

    @property
    def function(self) -> FunctionFragment | None: ...


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
        if delta.function is not None:
            current.name += delta.function.name or ""
            if delta.function.arguments:
                current.arguments.append(delta.function.arguments)

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


def upstream_code(body: object) -> str | None:
    """The upstream's own error code (`model_not_found`, ...), when the body has one."""
    code = error_details(body).get("code")
    return code if isinstance(code, str) else None


def stream_error_status(body: object) -> int | None:
    """The HTTP status an error event inside a 200 stream stands for, when it says."""
    status = error_details(body).get("status_code")
    return status if isinstance(status, int) else None


def wire_request(
    messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
) -> dict[str, Any]:
    """`messages` and `tools` as keyword arguments of an SDK's `chat.completions.create`.

    The SDKs transform both field by field against their typed params: about 3 ms of CPU on the
    event loop per request with a 20-message history and 3 tools. Ours are already the wire
    format, so they go in `extra_body`, which the SDK merges into the request JSON as it is
    (0.45 ms per request in all; `python -m bench.request_build`, docs/performance.md). The SDK
    still sends, retries and maps error answers.
    """
    body: dict[str, Any] = {"messages": list(messages)}
    if tools:
        body["tools"] = list(tools)
    # `messages` is a required parameter: an empty list, replaced by the one in `extra_body`.
    return {"messages": [], "extra_body": body}
