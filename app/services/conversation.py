"""A live session: the client's frames in, one response at a time, every event stored and sent."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Protocol, assert_never

from app.database.base import SessionRecord, Store, StoreError
from app.protocol import (
    ClientFrame,
    ErrorCode,
    ErrorFrame,
    PingIn,
    Pong,
    ResponseCancelIn,
    ServerFrame,
    StoredEvent,
    UserMessageEvent,
    UserMessageIn,
)
from app.services.context import ContextBudget, ContextTooSmall, RollingSummary
from app.services.event_writer import EventWriter
from app.services.llm.base import ChatMessage, LLMError, LLMProvider, ToolDefinition
from app.services.metrics import Metrics
from app.services.runner import ResponseConfig, ResponseRunner
from app.services.summaries import Summarizer
from app.services.supervisor import TaskSupervisor
from app.services.tools import ToolContext, ToolRegistry

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    """Where a conversation's frames go; sending after the client left is a silent no-op."""

    async def send(self, frame: ServerFrame) -> None: ...

    async def close(self, code: int, reason: str) -> None:
        """Close the connection from the server's side."""
        ...


class ConversationState(Enum):
    OPEN = "open"  # a client is attached
    DETACHED = "detached"  # the client left; a response may still be finishing
    CLOSED = "closed"  # torn down: nothing runs, everything is stored


@dataclass(frozen=True, slots=True)
class ConversationDeps:
    """Everything a conversation uses, built once by the app."""

    store: Store
    writer: EventWriter
    provider: LLMProvider
    tools: ToolRegistry
    response: ResponseConfig
    context: ContextBudget
    summarizer: Summarizer
    metrics: Metrics
    supervisor: TaskSupervisor
    max_message_chars: int


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class Conversation:
    """The state of one session while a connection (or its last response) is alive."""

    def __init__(
        self,
        record: SessionRecord,
        events: list[StoredEvent],
        deps: ConversationDeps,
        sink: FrameSink,
    ) -> None:
        self.session_record = record
        self.state = ConversationState.OPEN
        self.closed = asyncio.Event()
        self._deps = deps
        self._sink: FrameSink | None = sink
        self._events = events
        self._seq = events[-1].seq if events else 0
        self._message_ids = {e.id: e for e in events if isinstance(e, UserMessageEvent)}
        self._runner: ResponseRunner | None = None
        self._response_task: asyncio.Task[None] | None = None
        self._rolling = RollingSummary(record.context_summary, record.context_summary_seq)
        self._title_requested = False

    # -- ResponseHost ------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self.session_record.id

    @property
    def events(self) -> Sequence[StoredEvent]:
        return self._events

    @property
    def has_messages(self) -> bool:
        return bool(self._message_ids)

    async def prompt(self, tools: Sequence[ToolDefinition], *, hard: bool) -> list[ChatMessage]:
        try:
            messages, rolling = await self._deps.context.fit(
                self._events, self._rolling, tools, hard=hard
            )
        except ContextTooSmall as e:
            raise LLMError(ErrorCode.LLM_ERROR, str(e)) from e
        if rolling.upto_seq != self._rolling.upto_seq:
            self._rolling = rolling
            await self._save_rolling_summary()
        return messages

    async def _save_rolling_summary(self) -> None:
        try:
            await self._deps.store.save_context_summary(
                self.session_id, summary=self._rolling.text or "", upto_seq=self._rolling.upto_seq
            )
        except StoreError as e:
            # The summary is rebuilt from the events if it is lost; the response goes on.
            log.warning("could not store the rolling summary of %s: %s", self.session_id, e)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def record(self, event: StoredEvent) -> None:
        self._events.append(event)
        self._deps.writer.submit(self.session_id, event)

    async def send(self, frame: ServerFrame) -> None:
        if self._sink is not None:
            await self._sink.send(frame)

    # -- client frames -------------------------------------------------------------------

    async def handle(self, frame: ClientFrame) -> None:
        """Act on one parsed client frame."""
        if isinstance(frame, UserMessageIn):
            await self._on_user_message(frame)
        elif isinstance(frame, ResponseCancelIn):
            await self._on_cancel()
        elif isinstance(frame, PingIn):
            await self.send(Pong())
        else:
            assert_never(frame)

    async def send_error(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        await self.send(ErrorFrame(code=code, message=message, retryable=retryable))

    @property
    def responding(self) -> bool:
        return self._response_task is not None and not self._response_task.done()

    async def _on_user_message(self, frame: UserMessageIn) -> None:
        # Idempotency first: a resent stored id is acknowledged again, even mid-response.
        if frame.id is not None and (stored := self._message_ids.get(frame.id)) is not None:
            await self.send(stored)
            return
        if self.responding:
            await self.send_error(
                ErrorCode.RESPONSE_IN_PROGRESS, "wait for the current response or cancel it"
            )
            return
        if not frame.text.strip():
            await self.send_error(ErrorCode.INVALID_EVENT, "text must not be empty")
            return
        if "\x00" in frame.text:
            # PostgreSQL cannot store NUL in text; no store accepts what one store refuses.
            await self.send_error(ErrorCode.INVALID_EVENT, "text must not contain NUL characters")
            return
        if self._deps.writer.full:
            await self.send_error(
                ErrorCode.INTERNAL_ERROR,
                "storage is unavailable right now; retry in a moment",
                retryable=True,
            )
            return
        limit = self._deps.max_message_chars
        if len(frame.text) > limit:
            await self.send_error(
                ErrorCode.MESSAGE_TOO_LARGE, f"text is longer than {limit} characters"
            )
            return
        message = await self._store_user_message(frame)
        if message is not None:
            await self.send(message)
            self._start_response()

    async def _store_user_message(self, frame: UserMessageIn) -> UserMessageEvent | None:
        """Commit the message before acknowledging it; on failure nothing is acknowledged."""
        message = UserMessageEvent(
            seq=self._seq + 1,
            created_at=datetime.now(UTC),
            id=frame.id or new_id("msg"),
            text=frame.text,
        )
        try:
            await self._deps.writer.commit(self.session_id, message)
        except StoreError as e:
            log.error("could not store a user message of %s: %s", self.session_id, e)
            await self.send_error(
                ErrorCode.INTERNAL_ERROR, "the message could not be stored; retry", retryable=True
            )
            return None
        self._seq = message.seq
        self._events.append(message)
        self._message_ids[message.id] = message
        return message

    def _start_response(self) -> None:
        deps = self._deps
        runner = ResponseRunner(
            self,
            response_id=new_id("resp"),
            provider=deps.provider,
            tools=deps.tools,
            tool_context=ToolContext(store=deps.store, session_id=self.session_id),
            config=deps.response,
            metrics=deps.metrics,
        )
        self._runner = runner
        self._response_task = deps.supervisor.spawn(
            self._respond(runner), name=f"response-{runner.response_id}"
        )

    async def _respond(self, runner: ResponseRunner) -> None:
        await runner.run()
        # After the first exchange the session gets a title, in the background.
        if self.session_record.title is None and runner.completed and not self._title_requested:
            self._title_requested = True
            self._deps.summarizer.request_title(self.session_id, list(self._events))

    async def _on_cancel(self) -> None:
        if not self.responding or self._runner is None:
            await self.send_error(ErrorCode.NO_ACTIVE_RESPONSE, "no response is running")
            return
        self._runner.cancel()

    # -- lifecycle -----------------------------------------------------------------------

    async def close_connection(self, code: int, reason: str) -> None:
        """Close the client's socket (at shutdown); the client may resume elsewhere."""
        if self._sink is not None:
            await self._sink.close(code, reason)

    def cancel_response(self) -> None:
        if self.responding and self._runner is not None:
            self._runner.cancel()

    def detach(self) -> None:
        """The client is gone: keep running the response, send nothing more."""
        self._sink = None
        if self.state is ConversationState.OPEN:
            self.state = ConversationState.DETACHED

    async def wait_response(self) -> None:
        """Return once no response is running (the running one ends on its own)."""
        if self._response_task is not None:
            await asyncio.wait([self._response_task])

    def mark_closed(self) -> None:
        self.state = ConversationState.CLOSED
        self.closed.set()
