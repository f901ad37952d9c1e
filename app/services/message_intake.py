"""The part of a `Conversation` that takes a user message: refused at once, or stored by its
own task and acknowledged once committed (or answered `store_unavailable` after
`STORE_COMMIT_TIMEOUT_S`), then answered by a response."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from datetime import UTC, datetime

from app.database.base import EventRow, Lease, SessionRecord, StoreError, WriteRefused
from app.protocol import (
    ErrorCode,
    ErrorFrame,
    ServerFrame,
    StoredEvent,
    UserMessageEvent,
    UserMessageIn,
    WhileBusy,
)
from app.services.conversation_parts import (
    ConversationDeps,
    ConversationTasks,
    SessionOpener,
    Storing,
    new_id,
)
from app.services.runner import ResponseRunner
from app.services.storable import unstorable
from app.services.usage import LimitExceeded

log = logging.getLogger(__name__)


class MessageIntake(ABC):
    """Takes the client's user messages for a `Conversation` (which keeps the state below)."""

    session_record: SessionRecord
    lease: Lease | None
    _deps: ConversationDeps
    _events: list[StoredEvent]
    _seq: int
    _message_ids: dict[str, UserMessageEvent]
    _storing: Storing | None
    _tasks: ConversationTasks
    _opener: SessionOpener | None
    _session_counted: bool

    @property
    @abstractmethod
    def busy(self) -> bool:
        """A response is in progress (running or paused on approvals)."""

    @property
    @abstractmethod
    def queue_length(self) -> int:
        """Queued messages waiting for their turn."""

    @property
    def session_id(self) -> str:
        return self.session_record.id

    @property
    def responding(self) -> bool:
        return self._tasks.response is not None and not self._tasks.response.done()

    @property
    def storing(self) -> bool:
        """A user message is on its way to the store (its response has not started)."""
        return self._storing is not None

    def stored_message(self, message_id: str) -> UserMessageEvent | None:
        return self._message_ids.get(message_id)

    def unanswered(self, message: UserMessageEvent) -> bool:
        """The stored message is the last one and no response to it ran or runs."""
        return self._unanswered(message)

    @abstractmethod
    async def send(self, frame: ServerFrame) -> None:
        """To the client (the conversation's)."""

    async def send_error(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        await self.send(ErrorFrame(code=code, message=message, retryable=retryable))

    @abstractmethod
    def _start_response(self, *, supersedes: str | None = None, cancelled: bool = False) -> None:
        """Start answering the last message (the conversation's)."""

    @abstractmethod
    async def _enqueue(self, frame: UserMessageIn) -> None:
        """Store the message now and answer it in its turn."""

    @abstractmethod
    async def _interrupt(self) -> None:
        """End the response in progress as if cancelled."""

    @abstractmethod
    def _answer_next(self, *, ending: ResponseRunner | None = None) -> None:
        """Start answering the oldest queued message, if nothing else goes first."""

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
        if self.busy and frame.while_busy is WhileBusy.ENQUEUE:
            await self._enqueue(frame)
            return
        if self.busy:  # `interrupt` (a `reject` was refused above)
            await self._interrupt()
        storing = self._store_user_message(frame)
        await storing.answered.wait()

    def _refusal(self, frame: UserMessageIn) -> tuple[ErrorCode, str, bool] | None:
        """Why the message cannot be taken now (nothing is stored), or None."""
        if self._storing is not None:
            # Only after a timeout: messages are handled one at a time otherwise.
            return ErrorCode.STORE_UNAVAILABLE, "the store is not answering; retry shortly", True
        if self.busy and frame.while_busy is WhileBusy.REJECT:
            return (
                ErrorCode.RESPONSE_IN_PROGRESS,
                "wait for the current response or cancel it",
                False,
            )
        if (
            self.busy
            and frame.while_busy is WhileBusy.ENQUEUE
            and self.queue_length >= self._deps.max_queued_messages
        ):
            limit = self._deps.max_queued_messages
            return ErrorCode.QUEUE_FULL, f"{limit} messages already wait; retry later", True
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

    def _store_user_message(self, frame: UserMessageIn) -> Storing:
        """Commit the message in its own task (it goes on if the connection ends); the
        acknowledgement is sent only once the message is committed."""
        message = UserMessageEvent(
            seq=self._seq + 1,
            created_at=datetime.now(UTC),
            id=frame.id or new_id("msg"),
            text=frame.text,
        )
        self._storing = storing = Storing(message)
        self._tasks.storing = self._deps.supervisor.spawn(
            self._acknowledge(storing), name=f"store-{self.session_id}"
        )
        return storing

    async def _acknowledge(self, storing: Storing) -> None:
        try:
            lease = await self._admit()
            if lease is not None:
                committed = self._deps.writer.commit(EventRow(lease, storing.message))
                await self._answer(storing, committed)
        finally:
            storing.answered.set()
            self._answer_next()  # a refused interrupt leaves the queue to go on

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

    async def _answer(self, storing: Storing, committed: asyncio.Future[None]) -> None:
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
        # A cancel read while the acknowledgement is sent stops the response it starts.
        storing.acknowledged = True
        try:
            await self.send(storing.message)
        finally:
            self._storing = None
        self._start_response(cancelled=storing.cancel_at_start)

    async def _commit_timed_out(self, storing: Storing, committed: asyncio.Future[None]) -> None:
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
        if self.busy or self._storing is not None:
            return False
        later = (event for event in self._events if event.seq > message.seq)
        return not any(event.type in ("user.message", "assistant.message") for event in later)

    def _adopt(self, message: UserMessageEvent) -> None:
        self._seq = message.seq
        self._events.append(message)
        self._message_ids[message.id] = message
