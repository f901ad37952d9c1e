"""The part of a `Conversation` that keeps what waits (protocol 1.1): calls waiting for the
person's approval, messages queued while a response runs, interrupts, and what a stopped process
left waiting in the log (a round waiting for approval, queued messages)."""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from datetime import UTC, datetime

from app.database.base import EventRow, StoreError, WriteRefused
from app.protocol import (
    ErrorCode,
    ToolApprovalEvent,
    ToolApprovalIn,
    UserMessageEvent,
    UserMessageIn,
)
from app.services.approvals import (
    ApprovalDesk,
    Decision,
    PausedRound,
    ResumedRound,
    stored_answer,
)
from app.services.conversation_parts import ConversationState, new_id
from app.services.message_intake import MessageIntake
from app.services.runner import ResponseRunner
from app.services.storable import unstorable

log = logging.getLogger(__name__)


class WaitingWork(MessageIntake):
    """Approvals, the queue and interrupts for a `Conversation` (which keeps the state below)."""

    state: ConversationState
    _approvals: ApprovalDesk
    _paused: PausedRound | None
    _queue: list[UserMessageEvent]
    _queue_holds: int
    _queue_stopped: bool

    @abstractmethod
    def next_seq(self) -> int:
        """The session's next seq (the conversation's)."""

    @abstractmethod
    def _start_response(
        self,
        *,
        supersedes: str | None = None,
        cancelled: bool = False,
        resumed: ResumedRound | None = None,
    ) -> None:
        """Start answering (the conversation's)."""

    @property
    def busy(self) -> bool:
        """A response is in progress: running, or paused on approvals a stopped process left."""
        return self.responding or self._paused is not None

    @property
    def pending_approvals(self) -> list[str]:
        """The call ids waiting for the person's answer (not expired), oldest first."""
        if self._paused is not None and self._tasks.paused is None:
            now = datetime.now(UTC)
            return [r.call_id for r in self._paused.unanswered if r.expires_at > now]
        return self._approvals.pending()

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def resume_backlog(self) -> None:
        """Go on with what the log left waiting (after `session.ready`, or with no client):
        a round waiting for approval waits for its answers again, queued messages are
        answered."""
        if self._paused is not None and self._tasks.paused is None:
            paused = self._paused
            for request in paused.unanswered:
                self._approvals.open(request)
            self._tasks.paused = self._deps.supervisor.spawn(
                self._await_paused(paused), name=f"paused-{self.session_id}"
            )
        else:
            self._answer_next()

    async def _await_paused(self, paused: PausedRound) -> None:
        call_ids = [request.call_id for request in paused.unanswered]
        try:
            decided = await self._approvals.decisions(call_ids)
        finally:
            self._approvals.close(call_ids)
        decisions = {call_id: Decision.of(a) for call_id, a in paused.answers.items()}
        self._paused = None
        self._start_response(resumed=ResumedRound(paused.calls, decisions | decided))

    def _end_paused(self) -> None:
        """Cancel a round left waiting for approval: a response that ends at once, cancelled,
        closes its calls."""
        paused, self._paused = self._paused, None
        assert paused is not None
        if self._tasks.paused is not None:
            self._tasks.paused.cancel()
        self._approvals.close([request.call_id for request in paused.requests])
        self._start_response(cancelled=True, resumed=ResumedRound(paused.calls, {}))

    def _answer_next(self, *, ending: ResponseRunner | None = None) -> None:
        """Start answering the oldest queued message, if nothing else goes first (`ending`:
        the response whose task calls this as its last step)."""
        running = self._tasks.runner is not ending and self.responding
        if (
            running
            or self._paused is not None
            or self._storing is not None
            or self._queue_holds
            or self._queue_stopped
            or not self._queue
            or self._tasks.ending is not None
            or self.state is ConversationState.CLOSED
        ):
            return
        self._queue.pop(0)
        self._start_response()

    async def _interrupt(self) -> None:
        """End the response in progress as if cancelled, before an interrupting message."""
        self._queue_holds += 1
        try:
            if self._paused is not None:
                self._end_paused()
            elif self._tasks.runner is not None:
                self._tasks.runner.cancel()
            if self._tasks.response is not None:
                await asyncio.wait([self._tasks.response])  # a cancelled response ends at once
        finally:
            self._queue_holds -= 1

    async def _enqueue(self, frame: UserMessageIn) -> None:
        """Store the message now, answer it in its turn (`while_busy: enqueue`)."""
        if await self._admit() is None:
            return
        assert self.lease is not None
        message = UserMessageEvent(
            seq=self.next_seq(),
            created_at=datetime.now(UTC),
            id=frame.id or new_id("msg"),
            text=frame.text,
            queued=True,
        )
        self._events.append(message)
        self._message_ids[message.id] = message
        try:
            if await self._confirm(self._deps.writer.commit(EventRow(self.lease, message))):
                await self.send(message)
        finally:
            # In the queue once acknowledged (or refused), so its answer never starts first.
            self._queue.append(message)
            self._answer_next()

    async def _on_approval(self, frame: ToolApprovalIn) -> None:
        if frame.reason is not None and unstorable(frame.reason):
            await self.send_error(ErrorCode.INVALID_EVENT, "reason must not contain NUL characters")
            return
        request = self._approvals.claim(frame.call_id)
        if request is None:
            stored = stored_answer(self._events, frame.call_id)
            if stored is not None and (stored.approved, stored.reason) == (
                frame.approved,
                frame.reason,
            ):
                await self.send(stored)  # the same answer again: acknowledged again
                return
            await self.send_error(
                ErrorCode.APPROVAL_NOT_PENDING,
                "no tool call with this call_id is waiting for approval",
            )
            return
        assert self.lease is not None
        answer = ToolApprovalEvent(
            seq=self.next_seq(),
            created_at=datetime.now(UTC),
            response_id=request.response_id,
            call_id=request.call_id,
            approved=frame.approved,
            reason=frame.reason,
        )
        self._events.append(answer)
        try:
            if await self._confirm(self._deps.writer.commit(EventRow(self.lease, answer))):
                await self.send(answer)
        finally:
            self._approvals.decide(request.call_id, Decision.of(answer))

    async def _confirm(self, committed: asyncio.Future[None]) -> bool:
        """Wait (bounded) for an event written while a response may run; False, with the
        client told, when it was not confirmed. The event stays queued and in the history,
        so a resend of the same frame is acknowledged with it."""
        try:
            async with asyncio.timeout(self._deps.commit_timeout_s):
                await asyncio.shield(committed)
        except WriteRefused:
            return False  # the session's holding ended: the hub ends the conversation
        except (TimeoutError, StoreError) as e:
            log.warning("an event of %s was not confirmed: %s", self.session_id, e)
            await self.send_error(
                ErrorCode.STORE_UNAVAILABLE,
                "the store did not confirm in time; send the same frame again",
                retryable=True,
            )
            return False
        return True

    def stop_for_shutdown(self) -> None:
        """At shutdown: no queued message starts; a response waiting for approvals ends with
        them still pending (the next process asks again)."""
        self._queue_stopped = True
        if self._tasks.runner is not None and self.responding:
            self._tasks.runner.pause()
        if self._tasks.paused is not None:
            self._tasks.paused.cancel()
