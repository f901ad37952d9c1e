"""A live session: the client's frames in, one response at a time, every event stored and sent.

The connection's read loop never waits on the store: `handle()` returns at once, a user message
is committed by its own task, and the acknowledgement (or `store_unavailable` after
`STORE_COMMIT_TIMEOUT_S`) is sent from there, so pings, cancels and the client's close are read
while the store stalls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import assert_never

from app.database.base import EventRow, Lease, SessionRecord, StoreError
from app.protocol import (
    RESPONSE_FRAME_TYPES,
    AssistantMessageEvent,
    ClientFrame,
    ErrorCode,
    LiveResponse,
    PingIn,
    Pong,
    ResponseCancelIn,
    ServerFrame,
    SessionReady,
    StoredEvent,
    ToolApprovalIn,
    UserMessageEvent,
    UserMessageIn,
)
from app.services.approvals import (
    ApprovalDesk,
    PausedRound,
    ResumedRound,
    paused_round,
)
from app.services.context import ContextTooSmall, RollingSummary
from app.services.conversation_parts import (
    CONVERSATION_TRANSITIONS,
    ConversationDeps,
    ConversationState,
    ConversationTasks,
    Ending,
    FrameSink,
    SessionOpener,
    Storing,
    new_id,
)
from app.services.history import current_events, queued_backlog
from app.services.llm.base import ChatMessage, LLMError, LLMErrorKind, ToolDefinition
from app.services.response_feed import ResponseFeed
from app.services.runner import ResponseRunner
from app.services.states import check_transition
from app.services.tools import ToolContext
from app.services.waiting_work import WaitingWork

# What the hub, joins and the AI SDK's turns use with a conversation.
__all__ = ["Conversation", "ConversationDeps", "ConversationState", "Ending", "FrameSink"]

log = logging.getLogger(__name__)


class Conversation(WaitingWork):
    """The state of one session while a connection (or its last response) is alive."""

    def __init__(
        self,
        record: SessionRecord,
        events: list[StoredEvent],
        deps: ConversationDeps,
        sink: FrameSink | None,
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
        # Made when first waited for: an idle connection holds no event it does not use
        # (each asyncio.Event is ~0.7 KiB, its waiters' deque preallocated).
        self._closed: asyncio.Event | None = None
        # Grows with every client that joins: a teardown of an earlier connection stands down.
        self.attachment = 0
        self._joined: asyncio.Event | None = None
        self._deps = deps
        self._sink: FrameSink | None = sink
        self._events = events
        self._seq = events[-1].seq if events else 0
        self._message_ids = {e.id: e for e in events if isinstance(e, UserMessageEvent)}
        self._storing: Storing | None = None
        self._tasks = ConversationTasks()
        self._rolling = RollingSummary(record.context_summary, record.context_summary_seq)
        self._title_requested = False
        self._approvals = ApprovalDesk()
        # What a stopped process left: a round waiting for approval, queued messages.
        self._paused: PausedRound | None = paused_round(events)
        # A list, not a deque: it is short (MAX_QUEUED_MESSAGES), and an empty deque holds a
        # 64-slot block (~0.7 KiB) in every open connection.
        self._queue: list[UserMessageEvent] = queued_backlog(events)
        # Interrupts under way hold the queue; a shutdown stops it.
        self._queue_holds = 0
        self._queue_stopped = False
        if sink is None:  # answering a backlog with no client connected
            self.state = ConversationState.DETACHED

    # -- what its responses use: the history, the prompt, and their output ---------------

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
            raise LLMError(LLMErrorKind.CONTEXT_TOO_LONG, str(e)) from e
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
        elif isinstance(frame, ToolApprovalIn):
            await self._on_approval(frame)
        elif isinstance(frame, ResponseCancelIn):
            await self._on_cancel()
        elif isinstance(frame, PingIn):
            await self.send(Pong())
        else:
            assert_never(frame)

    async def regenerate(
        self, target: str | None, *, kept: str | None = None
    ) -> tuple[ErrorCode, str] | None:
        """Answer the last user message again, replacing the last answer. `target` (when
        given) names that answer or the message it answered; `kept` (when given) is the
        client's last message, which must be that message. Returns why not; limits and store
        trouble go to the client as `error` frames, as for a message. The replaced answer
        stays in the log."""
        if self.busy or self._storing is not None:
            return ErrorCode.RESPONSE_IN_PROGRESS, "wait for the current response or cancel it"
        last = self._events[-1] if self._events else None
        if not isinstance(last, AssistantMessageEvent):
            return ErrorCode.INVALID_EVENT, "there is no answer to regenerate"
        question = next(e for e in reversed(self._events) if isinstance(e, UserMessageEvent))
        if target not in (None, last.response_id, question.id) or kept not in (None, question.id):
            return ErrorCode.INVALID_EVENT, "only the last answer can be regenerated"
        if await self._admit() is not None:
            self._start_response(supersedes=last.response_id)
        return None

    def _start_response(
        self,
        *,
        supersedes: str | None = None,
        cancelled: bool = False,
        resumed: ResumedRound | None = None,
    ) -> None:
        """Start answering; `cancelled`: a stop came first, so it ends at once, cancelled;
        `resumed`: it runs a round left waiting for approval first."""
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
            approvals=self._approvals,
            supersedes=supersedes,
            resumed=resumed,
        )
        if cancelled:
            runner.cancel()
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
        self._answer_next(ending=runner)

    async def _on_cancel(self) -> None:
        if self._paused is not None:
            self._end_paused()
            return
        if self._storing is not None and self._storing.acknowledged:
            self._storing.cancel_at_start = True  # its response has not started yet
            return
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
        """Cancel the running response; a message still being stored gets its response
        started cancelled (a stop pressed before the answer began)."""
        if self.responding and self._tasks.runner is not None:
            self._tasks.runner.cancel()
        elif self._storing is not None:
            self._storing.cancel_at_start = True

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
        if self._joined is not None:
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
            pending_approvals=self.pending_approvals,
        )
        self._sink = sink
        self._move(ConversationState.OPEN)
        self.attachment += 1
        if self._joined is not None:
            self._joined.set()
        return ready

    async def wait_response_unless_joined(self, attachment: int) -> bool:
        """Wait until no response runs, or a client joined after `attachment`: True if one did."""
        if self.attachment != attachment:
            return True
        if self._joined is None:
            self._joined = asyncio.Event()
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
        """Return once no response runs and no message is being stored (a response that
        ends may start the next queued one: waited for too)."""
        while tasks := [
            t for t in (self._tasks.storing, self._tasks.response) if t is not None and not t.done()
        ]:
            await asyncio.wait(tasks)

    def mark_closed(self) -> None:
        """Torn down (once; closing again changes nothing)."""
        if self._tasks.paused is not None:
            self._tasks.paused.cancel()  # its round stays pending in the log
        if self.state is not ConversationState.CLOSED:
            self._move(ConversationState.CLOSED)
        if self._closed is not None:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Return once torn down (`mark_closed`)."""
        if self.state is ConversationState.CLOSED:
            return
        if self._closed is None:
            self._closed = asyncio.Event()
        await self._closed.wait()

    def _move(self, new: ConversationState) -> None:
        self.state = check_transition(CONVERSATION_TRANSITIONS, self.state, new)
