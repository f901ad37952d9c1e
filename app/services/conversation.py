"""A live session: the client's frames in, one response at a time, every event stored and sent.

The connection's read loop never waits on the store: `handle()` returns at once, a user message
is committed by its own task, and the acknowledgement (or `store_unavailable` after
`STORE_COMMIT_TIMEOUT_S`) is sent from there, so pings, cancels and the client's close are read
while the store stalls.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Protocol, assert_never

from app.database.base import EventRow, Lease, SessionRecord, Store, StoreError, WriteRefused
from app.protocol import (
    RESPONSE_FRAME_TYPES,
    AssistantMessageEvent,
    ClientFrame,
    ErrorCode,
    ErrorFrame,
    LiveResponse,
    PingIn,
    Pong,
    ResponseCancelIn,
    ServerFrame,
    SessionReady,
    StoredEvent,
    UserMessageEvent,
    UserMessageIn,
)
from app.services.context import ContextBudget, ContextTooSmall, RollingSummary
from app.services.event_writer import EventWriter
from app.services.history import current_events
from app.services.llm.base import ChatMessage, LLMError, LLMProvider, ToolDefinition
from app.services.metrics import Metrics
from app.services.response_feed import LiveResponses, ResponseFeed
from app.services.runner import ResponseConfig, ResponseRunner
from app.services.states import check_transition
from app.services.storable import unstorable
from app.services.summaries import Summarizer
from app.services.supervisor import TaskSupervisor
from app.services.tools import ToolContext, ToolRegistry
from app.services.tracing import Tracing
from app.services.usage import LimitExceeded, UsageGuard

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    """Where a conversation's frames go; sending after the client left is a silent no-op.
    Frames go out in the order `send` is called (a joining client's `session.ready` is sent
    before any frame of the response it joins)."""

    async def send(self, frame: ServerFrame) -> None: ...

    async def close(self, code: int, reason: str) -> None:
        """Close the connection from the server's side."""
        ...


class SessionOpener(Protocol):
    """Stores a new session (its row, then its lease) when its first message arrives: a
    connection that never speaks leaves nothing in the store."""

    async def open_session(self, record: SessionRecord) -> Lease: ...


class ConversationState(Enum):
    """A conversation's attachment to its client; changed only through `Conversation._move`."""

    OPEN = "open"  # a client is attached
    DETACHED = "detached"  # the client left; a response may still be finishing (and be joined)
    CLOSED = "closed"  # torn down: nothing runs, everything is stored


_CONVERSATION_TRANSITIONS: dict[ConversationState, frozenset[ConversationState]] = {
    ConversationState.OPEN: frozenset({ConversationState.DETACHED, ConversationState.CLOSED}),
    ConversationState.DETACHED: frozenset({ConversationState.OPEN, ConversationState.CLOSED}),
    ConversationState.CLOSED: frozenset(),
}


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
    live: LiveResponses
    max_message_chars: int
    commit_timeout_s: float
    tracing: Tracing
    usage: UsageGuard


@dataclass(frozen=True, slots=True)
class Ending:
    """Why the server ends a conversation: the `error` frame to send, then the close code."""

    code: ErrorCode
    message: str
    close_code: int
    retryable: bool = False


@dataclass(slots=True)
class _Storing:
    """A user message on its way to the store (its acknowledgement not sent yet)."""

    message: UserMessageEvent
    # Set once the client has its answer: the acknowledgement, or a retryable refusal.
    answered: asyncio.Event = field(default_factory=asyncio.Event)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(slots=True)
class _Tasks:
    """The conversation's own tasks: the response, and the message being stored."""

    runner: ResponseRunner | None = None
    feed: ResponseFeed | None = None
    response: asyncio.Task[None] | None = None
    storing: asyncio.Task[None] | None = None
    ending: asyncio.Task[None] | None = None


class Conversation:
    """The state of one session while a connection (or its last response) is alive."""

    def __init__(
        self,
        record: SessionRecord,
        events: list[StoredEvent],
        deps: ConversationDeps,
        sink: FrameSink,
        *,
        lease: Lease | None,
        opener: SessionOpener | None = None,
    ) -> None:
        self.session_record = record
        # The connection's verified bearer token, never stored: for MCP servers that ask.
        self.credentials: str | None = None
        # None until the first message of a new session stores the session (via `opener`).
        self.lease = lease
        self._opener = opener
        self._session_counted = False
        self.state = ConversationState.OPEN
        self.closed = asyncio.Event()
        # Grows with every client that joins: a teardown of an earlier connection stands down.
        self.attachment = 0
        self._joined = asyncio.Event()
        self._deps = deps
        self._sink: FrameSink | None = sink
        self._events = events
        self._seq = events[-1].seq if events else 0
        self._message_ids = {e.id: e for e in events if isinstance(e, UserMessageEvent)}
        self._storing: _Storing | None = None
        self._tasks = _Tasks()
        self._rolling = RollingSummary(record.context_summary, record.context_summary_seq)
        self._title_requested = False

    # -- what its responses use: the history, the prompt, and their output ---------------

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
        runner = self._tasks.runner
        superseding = runner.supersedes if runner is not None and self.responding else None
        events = current_events(self._events, also_superseded=superseding)
        try:
            messages, rolling = await self._deps.context.fit(
                events, self._rolling, tools, hard=hard
            )
        except ContextTooSmall as e:
            raise LLMError(ErrorCode.LLM_ERROR, str(e)) from e
        if rolling.upto_seq != self._rolling.upto_seq:
            self._rolling = rolling
            await self._save_rolling_summary()
        return messages

    async def _save_rolling_summary(self) -> None:
        try:
            await self._deps.store.sessions.save_context_summary(
                self.session_id, summary=self._rolling.text or "", upto_seq=self._rolling.upto_seq
            )
        except StoreError as e:
            # The summary is rebuilt from the events if it is lost; the response goes on.
            log.warning("could not store the rolling summary of %s: %s", self.session_id, e)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def record(self, event: StoredEvent) -> None:
        # Responses run only after their message was stored, so under the session's lease.
        assert self.lease is not None
        self._events.append(event)
        self._deps.writer.submit(EventRow(self.lease, event))

    async def send(self, frame: ServerFrame) -> None:
        feed = self._tasks.feed
        if (
            feed is not None
            and isinstance(frame, RESPONSE_FRAME_TYPES)
            and frame.response_id == feed.response_id
        ):
            # Kept for joiners in the same step as it goes to the sink: a client that joins
            # gets each frame once, in the snapshot or live.
            feed.add(frame)
        if self._sink is not None:
            await self._sink.send(frame)

    # -- client frames -------------------------------------------------------------------

    async def handle(self, frame: ClientFrame) -> None:
        """Act on one parsed client frame. For a user message, returns once the client has its
        answer: the acknowledgement, or `store_unavailable` after `STORE_COMMIT_TIMEOUT_S`."""
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
        return self._tasks.response is not None and not self._tasks.response.done()

    async def _on_user_message(self, frame: UserMessageIn) -> None:
        # Idempotency first: a resent stored id is acknowledged again, even mid-response.
        if frame.id is not None and (stored := self._message_ids.get(frame.id)) is not None:
            await self.send(stored)
            if self._unanswered(stored):
                # Stored without an answer (its acknowledgement timed out, or the process that
                # stored it stopped before answering): the resend is answered, once.
                self._start_response()
            return
        refusal = self._refusal(frame)
        if refusal is not None:
            code, message, retryable = refusal
            await self.send_error(code, message, retryable=retryable)
            return
        storing = self._store_user_message(frame)
        await storing.answered.wait()

    def _refusal(self, frame: UserMessageIn) -> tuple[ErrorCode, str, bool] | None:
        """Why the message cannot be taken now (nothing is stored), or None."""
        if self._storing is not None:
            # Only after a timeout: messages are handled one at a time otherwise.
            return ErrorCode.STORE_UNAVAILABLE, "the store is not answering; retry shortly", True
        if self.responding:
            return (
                ErrorCode.RESPONSE_IN_PROGRESS,
                "wait for the current response or cancel it",
                False,
            )
        if not frame.text.strip():
            return ErrorCode.INVALID_EVENT, "text must not be empty", False
        if unstorable(frame.text) or (frame.id is not None and unstorable(frame.id)):
            # NUL and lone surrogates: no store keeps them, so none accepts them.
            return ErrorCode.INVALID_EVENT, "text and id must not contain NUL characters", False
        if len(frame.text) > self._deps.max_message_chars:
            limit = self._deps.max_message_chars
            return ErrorCode.MESSAGE_TOO_LARGE, f"text is longer than {limit} characters", False
        if self._deps.writer.full:
            return ErrorCode.STORE_UNAVAILABLE, "storage is unavailable; retry in a moment", True
        return None

    def _store_user_message(self, frame: UserMessageIn) -> _Storing:
        """Commit the message in its own task (it goes on if the connection ends); the
        acknowledgement is sent only once the message is committed."""
        message = UserMessageEvent(
            seq=self._seq + 1,
            created_at=datetime.now(UTC),
            id=frame.id or new_id("msg"),
            text=frame.text,
        )
        self._storing = storing = _Storing(message)
        self._tasks.storing = self._deps.supervisor.spawn(
            self._acknowledge(storing), name=f"store-{self.session_id}"
        )
        return storing

    async def _acknowledge(self, storing: _Storing) -> None:
        try:
            lease = await self._admit()
            if lease is not None:
                committed = self._deps.writer.commit(EventRow(lease, storing.message))
                await self._answer(storing, committed)
        finally:
            storing.answered.set()

    async def _admit(self) -> Lease | None:
        """Before anything of the message is stored: the owner's usage limits, then, for the
        first message of a new session, the session's row and lease. None (the client told why,
        the message not taken) when it cannot be stored now."""
        try:
            async with asyncio.timeout(self._deps.commit_timeout_s):
                await self._deps.usage.admit(
                    self.session_record.owner,
                    session_id=self.session_id,
                    new_session=self.lease is None and not self._session_counted,
                )
                self._session_counted = True
                if self.lease is None:
                    assert self._opener is not None  # a conversation without a lease has one
                    self.lease = await self._opener.open_session(self.session_record)
                return self.lease
        except LimitExceeded as e:
            self._storing = None
            self._deps.metrics.usage_refusals.labels(limit=e.limit).inc()
            await self.send(
                ErrorFrame(
                    code=ErrorCode.USAGE_LIMIT_EXCEEDED,
                    message=e.message,
                    retryable=True,
                    resets_at=e.resets_at,
                )
            )
        except (TimeoutError, StoreError) as e:
            self._storing = None
            log.warning("could not admit a message of %s: %s", self.session_id, e)
            await self.send_error(
                ErrorCode.STORE_UNAVAILABLE,
                "the store did not answer; nothing was stored, send the message again",
                retryable=True,
            )
        return None

    async def _answer(self, storing: _Storing, committed: asyncio.Future[None]) -> None:
        try:
            async with asyncio.timeout(self._deps.commit_timeout_s):
                await asyncio.shield(committed)
        except TimeoutError:
            await self._commit_timed_out(storing, committed)
            return
        except WriteRefused:
            self._storing = None
            return  # the session's holding ended: the hub ends the conversation and says why
        except StoreError as e:
            self._storing = None
            log.error("could not store a user message of %s: %s", self.session_id, e)
            await self.send_error(
                ErrorCode.STORE_UNAVAILABLE,
                "the message could not be stored; retry",
                retryable=True,
            )
            return
        self._adopt(storing.message)
        self._storing = None
        await self.send(storing.message)
        self._start_response()

    async def _commit_timed_out(self, storing: _Storing, committed: asyncio.Future[None]) -> None:
        """Not acknowledged in time: the client hears so at once; the write stays queued, and
        if it lands later the message joins the history unanswered (its resend answers it)."""
        await self.send_error(
            ErrorCode.STORE_UNAVAILABLE,
            "the store did not confirm the message in time; nothing was acknowledged, send again",
            retryable=True,
        )
        storing.answered.set()  # the connection reads on; the write stays queued
        try:
            await committed
        except StoreError:
            return  # refused or never written: nothing of it exists
        finally:
            self._storing = None
        self._adopt(storing.message)

    def _unanswered(self, message: UserMessageEvent) -> bool:
        """The message is the last one and no response to it ran or runs."""
        if self.responding or self._storing is not None:
            return False
        later = (event for event in self._events if event.seq > message.seq)
        return not any(event.type in ("user.message", "assistant.message") for event in later)

    def _adopt(self, message: UserMessageEvent) -> None:
        self._seq = message.seq
        self._events.append(message)
        self._message_ids[message.id] = message

    async def regenerate(self, response_id: str | None) -> tuple[ErrorCode, str] | None:
        """Answer the last user message again, replacing the last answer (`response_id`, when
        given, must name it). Returns why not; limits and store trouble go to the client as
        `error` frames, as for a message. The replaced answer stays in the log."""
        if self.responding or self._storing is not None:
            return ErrorCode.RESPONSE_IN_PROGRESS, "wait for the current response or cancel it"
        last = self._events[-1] if self._events else None
        if not isinstance(last, AssistantMessageEvent):
            return ErrorCode.INVALID_EVENT, "there is no answer to regenerate"
        if response_id is not None and response_id != last.response_id:
            return ErrorCode.INVALID_EVENT, "only the last answer can be regenerated"
        if await self._admit() is not None:
            self._start_response(supersedes=last.response_id)
        return None

    def _start_response(self, *, supersedes: str | None = None) -> None:
        deps = self._deps
        runner = ResponseRunner(
            self,
            prompt=self.prompt,
            session_id=self.session_id,
            history=self._events,
            response_id=new_id("resp"),
            provider=deps.provider,
            tools=deps.tools,
            tool_context=ToolContext(
                profiles=deps.store.profiles,
                session_id=self.session_id,
                owner=self.session_record.owner,
                credentials=self.credentials,
            ),
            config=deps.response,
            metrics=deps.metrics,
            tracing=deps.tracing,
            owner=self.session_record.owner,
            supersedes=supersedes,
        )
        self._tasks.runner = runner
        self._tasks.feed = deps.live.start(
            self.session_id, runner.response_id, cancel=self.cancel_response
        )
        self._tasks.response = deps.supervisor.spawn(
            self._respond(runner, self._tasks.feed), name=f"response-{runner.response_id}"
        )

    async def _respond(self, runner: ResponseRunner, feed: ResponseFeed) -> None:
        try:
            await runner.run()
        finally:
            self._deps.live.discard(feed)
        # After the first exchange the session gets a title, in the background.
        if self.session_record.title is None and runner.completed and not self._title_requested:
            self._title_requested = True
            self._deps.summarizer.request_title(self.session_id, list(self._events))

    async def _on_cancel(self) -> None:
        if not self.responding or self._tasks.runner is None:
            await self.send_error(ErrorCode.NO_ACTIVE_RESPONSE, "no response is running")
            return
        self._tasks.runner.cancel()

    # -- lifecycle -----------------------------------------------------------------------

    async def close_connection(self, code: int, reason: str) -> None:
        """Close the client's socket (at shutdown); the client may resume elsewhere."""
        if self._sink is not None:
            await self._sink.close(code, reason)

    def cancel_response(self) -> None:
        if self.responding and self._tasks.runner is not None:
            self._tasks.runner.cancel()

    def end(self, ending: Ending) -> None:
        """The server ends the conversation (its lease is lost, the session deleted): cancel
        the response, tell the client why, close its socket."""
        if self._tasks.ending is not None:
            return
        self.cancel_response()
        self._tasks.ending = self._deps.supervisor.spawn(
            self._end(ending), name=f"end-{self.session_id}"
        )

    async def _end(self, ending: Ending) -> None:
        log.warning("ending the conversation of %s: %s", self.session_id, ending.message)
        await self.send_error(ending.code, ending.message, retryable=ending.retryable)
        await self.close_connection(ending.close_code, ending.message)

    def detach(self) -> None:
        """The client is gone: keep running the response, send nothing more."""
        self._sink = None
        self._joined.clear()
        if self.state is ConversationState.OPEN:
            self._move(ConversationState.DETACHED)

    @property
    def joinable(self) -> bool:
        """The client left while a response runs: a resume joins it live."""
        feed = self._tasks.feed
        return (
            self.state is ConversationState.DETACHED
            and self.responding
            and feed is not None
            and not feed.ended
            and self._tasks.ending is None
        )

    def join(self, sink: FrameSink, *, after_seq: int, model: str) -> SessionReady:
        """Attach a resuming client to the running response. The snapshot and the attach are
        one synchronous step: every frame of the response is either in `live_response` and
        `events`, or sent to `sink` after the returned `session.ready` (sent first by the
        caller, with no await before it)."""
        feed = self._tasks.feed
        assert feed is not None
        assert self.joinable
        ready = SessionReady(
            session_id=self.session_id,
            resumed=True,
            events=[event for event in self._events if event.seq > after_seq],
            model=model,
            live_response=LiveResponse(response_id=feed.response_id, text=feed.text),
        )
        self._sink = sink
        self._move(ConversationState.OPEN)
        self.attachment += 1
        self._joined.set()
        return ready

    async def wait_response_unless_joined(self, attachment: int) -> bool:
        """Wait until no response runs, or a client joined after `attachment`: True if one did."""
        ended = asyncio.ensure_future(self.wait_response())
        joined = asyncio.ensure_future(self._joined.wait())
        try:
            await asyncio.wait([ended, joined], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ended, joined):
                task.cancel()
            await asyncio.wait([ended, joined])
        return self.attachment != attachment

    async def wait_response(self) -> None:
        """Return once no response runs and no message is being stored."""
        tasks = [t for t in (self._tasks.storing, self._tasks.response) if t is not None]
        if tasks:
            await asyncio.wait(tasks)
        # A message stored just now may have started a response.
        if self._tasks.response is not None and not self._tasks.response.done():
            await asyncio.wait([self._tasks.response])

    def mark_closed(self) -> None:
        """Torn down (once; closing again changes nothing)."""
        if self.state is not ConversationState.CLOSED:
            self._move(ConversationState.CLOSED)
        self.closed.set()

    def _move(self, new: ConversationState) -> None:
        self.state = check_transition(_CONVERSATION_TRANSITIONS, self.state, new)
