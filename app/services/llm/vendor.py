"""What differs between the servers of the chat-completions wire format: a `Vendor`.

The wire is one (chat_completions.py builds the request and reads the stream for all); a vendor
is data: its name in messages, the setting that holds its key, its error map (its own error
codes and statuses as our `LLMErrorKind`s) and the extensions of the wire it speaks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.services.llm.base import LLMError, LLMErrorKind, ToolCallRequest
from app.services.llm.failed_generation import recover_tool_calls

TOOL_USE_FAILED = "tool_use_failed"


class ErrorAnswer(Exception):
    """The upstream answered with an error: an HTTP error status before the stream, or an
    error event inside it. `details` is the inner error object (`message`, `code`, ...)."""

    def __init__(
        self, status: int | None, details: Mapping[str, Any], *, retry_after: str | None = None
    ) -> None:
        super().__init__(details.get("message") or f"error answer ({status})")
        self.status = status
        self.details = details
        self.retry_after = retry_after

    @property
    def code(self) -> str | None:
        """The upstream's own error code (`model_not_found`, ...), when it sent one."""
        code = self.details.get("code")
        return code if isinstance(code, str) else None

    def describe(self) -> str:
        """`<code>: <message>`, as the upstream put it."""
        code = self.code or self.details.get("type") or "error"
        return f"{code}: {self.details.get('message') or self}"


class Unreachable(Exception):
    """No answer came: no connection, or none in time (after the sender's retries)."""


@dataclass(frozen=True, slots=True)
class Vendor:
    """One kind of chat-completions server; its error map turns its answers into our errors."""

    label: str  # how messages name it: "Groq", "the OpenAI-compatible server"
    key_setting: str  # the setting to check when the key is refused
    # Its error codes that say more than the status does, then statuses that are not the rule
    # (5xx: unavailable; any other: refused).
    codes: Mapping[str, LLMErrorKind]
    statuses: Mapping[int, LLMErrorKind]
    unreachable_hint: str = ""  # appended to "unreachable" messages
    # Fields of the request body beyond the common ones.
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    # Groq's `x_groq` field in chunks: usage, and an error that ends the stream.
    groq_extensions: bool = False
    # Groq's `tool_use_failed` carries the model's raw text (`failed_generation`): run the
    # calls written in it.
    recovers_failed_generation: bool = False

    def kind_of(self, status: int | None, code: str | None) -> LLMErrorKind:
        """Our kind for an error answer: its code if the map knows it, else its status."""
        if code is not None and code in self.codes:
            return self.codes[code]
        if status is not None and status in self.statuses:
            return self.statuses[status]
        if status is not None and status >= 500:
            return LLMErrorKind.UNAVAILABLE
        return LLMErrorKind.REFUSED

    def answer_error(self, answer: ErrorAnswer) -> LLMError:
        """Our error for an error answer; its status and code are kept (fallbacks, traces)."""
        kind = self.kind_of(answer.status, answer.code)
        if kind is LLMErrorKind.RATE_LIMITED:
            asked = answer.retry_after
            wait = f" ({self.label} asks to wait {asked} s)" if asked else ""
            message = f"rate limited by {self.label}{wait}: {answer.describe()}"
        elif kind is LLMErrorKind.UNAVAILABLE:
            message = f"{self.label} is unavailable: {answer.describe()}"
        elif kind is LLMErrorKind.UNAUTHORIZED:
            message = f"{self.label} refused the key: check {self.key_setting}"
        else:
            message = answer.describe()
        return LLMError(
            kind,
            message,
            retryable=kind in (LLMErrorKind.RATE_LIMITED, LLMErrorKind.UNAVAILABLE),
            upstream_code=answer.code,
            upstream_status=answer.status,
        )

    def recovered_calls(self, answer: ErrorAnswer) -> list[ToolCallRequest]:
        """The tool calls of a `tool_use_failed` whose raw text is one (Groq); else none."""
        if not self.recovers_failed_generation or answer.code != TOOL_USE_FAILED:
            return []
        return recover_tool_calls(answer.details.get("failed_generation"))

    def unreachable(self, error: Unreachable) -> LLMError:
        message = f"{self.label} is unreachable: {error}{self.unreachable_hint}"
        return LLMError(LLMErrorKind.UNAVAILABLE, message, retryable=True)

    def stalled(self) -> LLMError:
        """No data within the read timeout, mid-stream."""
        return LLMError(
            LLMErrorKind.UNAVAILABLE, f"{self.label} stalled: no data in time", retryable=True
        )

    def broken(self, reason: str) -> LLMError:
        """The connection failed mid-stream."""
        message = f"{self.label}'s stream broke: {reason}"
        return LLMError(LLMErrorKind.UNAVAILABLE, message, retryable=True)

    def unreadable(self, reason: str) -> LLMError:
        """The stream says something that is not the wire format: never a bug of ours."""
        message = f"{self.label} sent a stream that cannot be read ({reason})"
        return LLMError(LLMErrorKind.UNAVAILABLE, message, retryable=True)

    def ended_early(self) -> LLMError:
        """The body ended without a finish reason: the answer is incomplete, not finished."""
        message = f"{self.label}'s stream ended early"
        return LLMError(LLMErrorKind.UNAVAILABLE, message, retryable=True)

    def stopped(self, error: object) -> LLMError:
        """Groq's `x_groq.error` in a chunk: it stopped generating."""
        return LLMError(LLMErrorKind.UNAVAILABLE, f"{self.label} stopped: {error}")
