"""The public interface, version 1: WebSocket frames, stored events and REST bodies, typed.

Wire tags (`type` values) and field names are fixed by PROTOCOL.md: add optional fields, never
rename.
This module depends on pydantic only, so every layer may import it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    StrictStr,
    TypeAdapter,
    model_serializer,
)

MAX_CLIENT_ID_CHARS = 64
# The largest seq (a signed 64-bit integer, as PostgreSQL's bigint).
MAX_SEQ = 2**63 - 1


class ErrorCode(StrEnum):
    """Codes of `error` frames and of `response.done.error`."""

    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    MESSAGE_TOO_LARGE = "message_too_large"
    RESPONSE_IN_PROGRESS = "response_in_progress"
    NO_ACTIVE_RESPONSE = "no_active_response"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    INVALID_REQUEST = "invalid_request"
    SESSION_NOT_FOUND = "session_not_found"
    SESSION_BUSY = "session_busy"
    LLM_RATE_LIMITED = "llm_rate_limited"
    LLM_UNAVAILABLE = "llm_unavailable"
    LLM_ERROR = "llm_error"
    TOOL_ROUNDS_EXCEEDED = "tool_rounds_exceeded"
    INTERNAL_ERROR = "internal_error"
    # Version 1.1: the store did not confirm in time (retryable; nothing was acknowledged).
    STORE_UNAVAILABLE = "store_unavailable"
    # An addition to version 1: the credentials could not be checked now (retryable).
    AUTH_UNAVAILABLE = "auth_unavailable"
    # An addition to version 1: the owner's usage limit is reached (retryable once it resets;
    # the `error` frame says when, and carries `resets_at` when it resets by time).
    USAGE_LIMIT_EXCEEDED = "usage_limit_exceeded"
    # Version 1.1: a `tool.approval` for a call that is not waiting for one (unknown, answered
    # otherwise, expired); nothing is stored.
    APPROVAL_NOT_PENDING = "approval_not_pending"
    # Version 1.1: `MAX_QUEUED_MESSAGES` already wait (retryable; nothing is stored).
    QUEUE_FULL = "queue_full"


class CloseCode:
    """WebSocket close codes of PROTOCOL.md."""

    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    TOO_LARGE = 1009
    # A retryable refusal (the store or the key endpoint does not answer): reconnect shortly.
    TRY_AGAIN_LATER = 1013
    INVALID_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    BUSY = 4409


class ResponseStatus(StrEnum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class SummaryStatus(StrEnum):
    NONE = "none"
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class _Frame(BaseModel):
    model_config = ConfigDict(frozen=True)


# ---------------------------------------------------------------- client -> server


class _ClientFrame(BaseModel):
    # Unknown extra fields are ignored so that newer clients keep working.
    model_config = ConfigDict(frozen=True, extra="ignore")


class WhileBusy(StrEnum):
    """Version 1.1: what a `user.message` sent while a response runs does."""

    REJECT = "reject"  # v1: `response_in_progress`, nothing stored
    ENQUEUE = "enqueue"  # stored and acknowledged now, answered when its turn comes
    INTERRUPT = "interrupt"  # the running response is cancelled, then this one is answered


class UserMessageIn(_ClientFrame):
    type: Literal["user.message"]
    # Length limits are settings, so they are checked by the conversation, not here.
    text: StrictStr
    id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_CLIENT_ID_CHARS)] | None = None
    while_busy: WhileBusy = WhileBusy.REJECT


MAX_APPROVAL_REASON_CHARS = 500


class ToolApprovalIn(_ClientFrame):
    """Version 1.1: the person's answer to a `tool.approval_requested`."""

    type: Literal["tool.approval"]
    call_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_CLIENT_ID_CHARS * 4)]
    approved: bool
    reason: Annotated[StrictStr, Field(max_length=MAX_APPROVAL_REASON_CHARS)] | None = None


class ResponseCancelIn(_ClientFrame):
    type: Literal["response.cancel"]


class PingIn(_ClientFrame):
    type: Literal["ping"]


ClientFrame = Annotated[
    UserMessageIn | ResponseCancelIn | PingIn | ToolApprovalIn, Field(discriminator="type")
]
client_frame_adapter: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


# ---------------------------------------------------------------- stored events
# Stored events double as the server frames that announce them (`user.message` is the
# acknowledgement, `tool.call` and `tool.result` are streamed as they happen).


class _StoredEvent(_Frame):
    seq: int
    created_at: datetime


class UserMessageEvent(_StoredEvent):
    type: Literal["user.message"] = "user.message"
    id: str
    text: str
    # Version 1.1: sent with `while_busy: enqueue` while a response ran; answered in its turn
    # (the model sees it after the answer it waited for). Absent when false.
    queued: bool = Field(default=False, exclude_if=lambda value: not value)


class ToolCallEvent(_StoredEvent):
    type: Literal["tool.call"] = "tool.call"
    response_id: str
    call_id: str
    name: str
    arguments: dict[str, JsonValue]
    # Present only when the model's arguments were not a JSON object.
    raw_arguments: str | None = Field(default=None, exclude_if=lambda value: value is None)
    # The MCP server whose tool this is; absent for built-in tools.
    server: str | None = Field(default=None, exclude_if=lambda value: value is None)


class ToolResultEvent(_StoredEvent):
    type: Literal["tool.result"] = "tool.result"
    response_id: str
    call_id: str
    name: str
    ok: bool
    result: JsonValue = None
    error: str | None = None

    @model_serializer(mode="wrap")
    def _result_or_error(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # `result` when ok, `error` when not: never both, so clients can branch on presence.
        data: dict[str, Any] = handler(self)
        data.pop("error" if self.ok else "result", None)
        return data


# Version 1.1: the `finish_reason` of a response that stopped at a server shutdown while calls
# waited for approval; the calls stay pending, and their answer starts a new response.
FINISH_AWAITING_APPROVAL = "awaiting_approval"


class ErrorInfo(_Frame):
    code: ErrorCode
    message: str


class AssistantMessageEvent(_StoredEvent):
    type: Literal["assistant.message"] = "assistant.message"
    response_id: str
    status: ResponseStatus
    text: str
    finish_reason: str
    usage: dict[str, JsonValue] | None
    model: str
    error: ErrorInfo | None = Field(default=None, exclude_if=lambda value: value is None)
    # An addition to version 1: the response this one replaced (an AI SDK regenerate). The
    # replaced response stays in the log; the model and the UI message views leave it out.
    supersedes: str | None = Field(default=None, exclude_if=lambda value: value is None)


class ToolApprovalRequestedEvent(_StoredEvent):
    """Version 1.1: a tool call waits for the person's approval (sent after its `tool.call`)."""

    type: Literal["tool.approval_requested"] = "tool.approval_requested"
    response_id: str
    call_id: str
    name: str
    arguments: dict[str, JsonValue]
    expires_at: datetime


class ToolApprovalEvent(_StoredEvent):
    """Version 1.1: the person's answer, stored; as a frame, its acknowledgement."""

    type: Literal["tool.approval"] = "tool.approval"
    response_id: str
    call_id: str
    approved: bool
    reason: str | None = None


StoredEvent = Annotated[
    UserMessageEvent
    | ToolCallEvent
    | ToolResultEvent
    | AssistantMessageEvent
    | ToolApprovalRequestedEvent
    | ToolApprovalEvent,
    Field(discriminator="type"),
]
stored_event_adapter: TypeAdapter[StoredEvent] = TypeAdapter(StoredEvent)


# ---------------------------------------------------------------- server -> client


class LiveResponse(_Frame):
    """Version 1.1: the response running when a client joins, as far as it got."""

    response_id: str
    # The answer text streamed so far: this plus the deltas that follow is `response.done.text`.
    text: str


class SessionReady(_Frame):
    type: Literal["session.ready"] = "session.ready"
    session_id: str
    resumed: bool
    events: list[StoredEvent]
    model: str
    # Version 1.1: the running response a resume joins, or null when none runs.
    live_response: LiveResponse | None = None
    # Version 1.1: the `call_id`s whose approval is still awaited (oldest first).
    pending_approvals: list[str] = Field(default_factory=list)


class ResponseStarted(_Frame):
    type: Literal["response.started"] = "response.started"
    response_id: str
    # An addition to version 1: when the response began (the same in every replay of it).
    created_at: datetime | None = Field(default=None, exclude_if=lambda value: value is None)


class ResponseDelta(_Frame):
    type: Literal["response.delta"] = "response.delta"
    response_id: str
    text: str


class ResponseWaiting(_Frame):
    """Optional addition to version 1: the response waits for the model (a local model answers
    one call at a time) or has started after waiting. Clients may ignore it."""

    type: Literal["response.status"] = "response.status"
    response_id: str
    state: Literal["queued", "started"]
    ahead: int
    message: str


class ResponseDone(_Frame):
    type: Literal["response.done"] = "response.done"
    seq: int
    response_id: str
    status: ResponseStatus
    text: str
    finish_reason: str
    usage: dict[str, JsonValue] | None
    error: ErrorInfo | None = None
    # Which model answered (optional field added to version 1).
    model: str | None = None
    # The response this one replaced (optional, see `AssistantMessageEvent.supersedes`).
    supersedes: str | None = Field(default=None, exclude_if=lambda value: value is None)


class ErrorFrame(_Frame):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    retryable: bool = False
    # Optional addition to version 1: when a `usage_limit_exceeded` limit resets.
    resets_at: datetime | None = Field(default=None, exclude_if=lambda value: value is None)


class Pong(_Frame):
    type: Literal["pong"] = "pong"


ServerFrame = (
    SessionReady
    | UserMessageEvent
    | ResponseStarted
    | ResponseDelta
    | ResponseWaiting
    | ToolCallEvent
    | ToolResultEvent
    | ToolApprovalRequestedEvent
    | ToolApprovalEvent
    | ResponseDone
    | ErrorFrame
    | Pong
)


# The frames of one response, from its start to its `response.done` (what a joining client
# is sent live, and what goes on the message bus between instances).
ResponseFrame = Annotated[
    ResponseStarted
    | ResponseDelta
    | ResponseWaiting
    | ToolCallEvent
    | ToolResultEvent
    | ToolApprovalRequestedEvent
    | ToolApprovalEvent
    | ResponseDone,
    Field(discriminator="type"),
]
response_frame_adapter: TypeAdapter[ResponseFrame] = TypeAdapter(ResponseFrame)
RESPONSE_FRAME_TYPES = (
    ResponseStarted,
    ResponseDelta,
    ResponseWaiting,
    ToolCallEvent,
    ToolResultEvent,
    ToolApprovalRequestedEvent,
    ToolApprovalEvent,
    ResponseDone,
)


# ---------------------------------------------------------------- REST


class SessionView(_Frame):
    """`Session` of PROTOCOL.md."""

    id: str
    status: Literal["active", "idle"]
    created_at: datetime
    updated_at: datetime
    title: str | None
    summary: str | None
    summary_status: SummaryStatus
    event_count: int
    model: str
    # Version 1.1 additions: the calls waiting for the person's approval, and how many
    # `enqueue`d messages wait for their answer.
    pending_approvals: list[str] = Field(default_factory=list)
    queue_length: int = 0


class SessionPage(_Frame):
    sessions: list[SessionView]
    next: str | None


class EventPage(_Frame):
    events: list[StoredEvent]


class UsageMeter(_Frame):
    """One usage count of an owner: how much is used, the limit (null: unlimited), and when the
    count starts again (null: it does not reset by time)."""

    used: int
    limit: int | None
    resets_at: datetime | None


class UsageView(_Frame):
    """`GET /api/usage`: the caller's usage and limits (an addition to version 1)."""

    tokens_today: UsageMeter
    sessions_this_hour: UsageMeter
    live_sessions: UsageMeter
