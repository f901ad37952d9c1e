"""Tool approval (protocol 1.1): the calls that wait for the person's answer, and what the
stored log says about them.

An `ApprovalDesk` belongs to a conversation. A response that reaches calls needing approval
opens them there and waits for their decisions; the client's answers are claimed and decided
there; a call nobody answers is decided "timed out" at its `expires_at`. A round left waiting
by a stopped process is rebuilt from the log (`paused_round`), and its answers start a new
response that runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.protocol import (
    StoredEvent,
    ToolApprovalEvent,
    ToolApprovalRequestedEvent,
    ToolCallEvent,
    ToolResultEvent,
)

DENIED = "denied by the user"
TIMED_OUT = "approval timed out"


@dataclass(frozen=True, slots=True)
class Decision:
    """What became of a call that waited for approval."""

    approved: bool
    reason: str | None = None
    timed_out: bool = False

    @property
    def denial(self) -> str | None:
        """The tool error the model reads when the call does not run; None when it runs."""
        if self.approved:
            return None
        if self.timed_out:
            return TIMED_OUT
        return f"{DENIED}: {self.reason}" if self.reason else DENIED

    @classmethod
    def of(cls, answer: ToolApprovalEvent) -> Decision:
        return cls(approved=answer.approved, reason=answer.reason)


@dataclass(slots=True)
class _Waiting:
    request: ToolApprovalRequestedEvent
    decided: asyncio.Future[Decision]
    # An answer is being stored: the expiry no longer applies to it.
    claimed: bool = False


def _seconds_until(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds()


class ApprovalDesk:
    """The calls of a conversation that wait for the person's answer."""

    def __init__(self) -> None:
        self._waiting: dict[str, _Waiting] = {}

    def open(self, request: ToolApprovalRequestedEvent) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiting[request.call_id] = _Waiting(request, future)

    def pending(self) -> list[str]:
        """The call ids still waiting for an answer, oldest first."""
        return [call_id for call_id, w in self._waiting.items() if not w.decided.done()]

    def claim(self, call_id: str) -> ToolApprovalRequestedEvent | None:
        """Take a call's answer in hand (its expiry stops); None when the call does not wait
        (unknown, decided, or another answer is being stored)."""
        waiting = self._waiting.get(call_id)
        if waiting is None or waiting.claimed or waiting.decided.done():
            return None
        waiting.claimed = True
        return waiting.request

    def decide(self, call_id: str, decision: Decision) -> None:
        waiting = self._waiting.get(call_id)
        if waiting is not None and not waiting.decided.done():
            waiting.decided.set_result(decision)

    def close(self, call_ids: Sequence[str]) -> None:
        """Forget these calls (their response ended)."""
        for call_id in call_ids:
            self._waiting.pop(call_id, None)

    async def decisions(self, call_ids: Sequence[str]) -> dict[str, Decision]:
        """Wait until every one of these calls is decided: answered, or timed out at its
        `expires_at` unless an answer was claimed by then."""
        while undecided := [
            self._waiting[c] for c in call_ids if not self._waiting[c].decided.done()
        ]:
            expiring = [w for w in undecided if not w.claimed]
            timeout = (
                max(min(_seconds_until(w.request.expires_at) for w in expiring), 0.0)
                if expiring
                else None
            )
            await asyncio.wait(
                [w.decided for w in undecided], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for waiting in expiring:
                late = _seconds_until(waiting.request.expires_at) <= 0
                if late and not waiting.claimed and not waiting.decided.done():
                    waiting.decided.set_result(Decision(approved=False, timed_out=True))
        return {call_id: self._waiting[call_id].decided.result() for call_id in call_ids}


@dataclass(frozen=True, slots=True)
class PausedRound:
    """A round of tool calls that waited for approval when its process stopped, as the log
    holds it: its calls without a result, the approval requests among them, and the answers
    already stored."""

    response_id: str
    calls: list[ToolCallEvent]
    requests: list[ToolApprovalRequestedEvent]
    answers: dict[str, ToolApprovalEvent] = field(default_factory=dict)

    @property
    def unanswered(self) -> list[ToolApprovalRequestedEvent]:
        return [r for r in self.requests if r.call_id not in self.answers]


def paused_round(events: Sequence[StoredEvent]) -> PausedRound | None:
    """The round still waiting for approval in this log (no response runs it), or None."""
    closed = {e.call_id for e in events if isinstance(e, ToolResultEvent)}
    requests = [
        e for e in events if isinstance(e, ToolApprovalRequestedEvent) and e.call_id not in closed
    ]
    if not requests:
        return None
    response_id = requests[-1].response_id
    return PausedRound(
        response_id=response_id,
        calls=[
            e
            for e in events
            if isinstance(e, ToolCallEvent)
            and e.response_id == response_id
            and e.call_id not in closed
        ],
        requests=[r for r in requests if r.response_id == response_id],
        answers={
            e.call_id: e
            for e in events
            if isinstance(e, ToolApprovalEvent) and e.response_id == response_id
        },
    )


def stored_answer(events: Sequence[StoredEvent], call_id: str) -> ToolApprovalEvent | None:
    return next(
        (e for e in events if isinstance(e, ToolApprovalEvent) and e.call_id == call_id), None
    )


def open_approvals(events: Sequence[StoredEvent]) -> list[str]:
    """The call ids of the log waiting for an answer that has not expired (for REST)."""
    paused = paused_round(events)
    if paused is None:
        return []
    return [r.call_id for r in paused.unanswered if _seconds_until(r.expires_at) > 0]


@dataclass(frozen=True, slots=True)
class ResumedRound:
    """What a response that goes on with a paused round starts from: the round's calls
    without a result, and what was decided about those that waited for approval."""

    calls: list[ToolCallEvent]
    decisions: dict[str, Decision]
