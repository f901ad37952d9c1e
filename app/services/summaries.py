"""End-of-session summaries, written by the model in the background."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from app.database.base import Store, StoreError
from app.protocol import (
    AssistantMessageEvent,
    ErrorCode,
    StoredEvent,
    SummaryStatus,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)
from app.services.llm.base import ChatMessage, LLMError, LLMProvider, complete_text
from app.services.metrics import Metrics
from app.services.supervisor import TaskSupervisor

log = logging.getLogger(__name__)

SUMMARY_INSTRUCTIONS = (
    "You summarize chat sessions between a user and an assistant. Write a short factual summary "
    "(at most five sentences) of what the user wanted, what was found or done (including tool "
    "results that mattered) and what is still open. Write only the summary."
)


def transcript_line(event: StoredEvent) -> str | None:
    """One readable line per event, for the summary prompt."""
    if isinstance(event, UserMessageEvent):
        return f"User: {event.text}"
    if isinstance(event, AssistantMessageEvent):
        return f"Assistant: {event.text}" if event.text else None
    if isinstance(event, ToolCallEvent):
        return f"Tool call {event.name}({event.raw_arguments or event.arguments})"
    if isinstance(event, ToolResultEvent):
        outcome = event.result if event.ok else f"error: {event.error}"
        return f"Tool result {event.name}: {outcome}"
    return None


def summary_prompt(previous: str | None, events: Sequence[StoredEvent]) -> list[ChatMessage]:
    """Messages asking for a summary; a previous summary is extended, not redone."""
    lines = [line for line in map(transcript_line, events) if line]
    transcript = "\n".join(lines)
    if previous:
        content = f"Summary so far:\n{previous}\n\nWhat happened since:\n{transcript}"
    else:
        content = f"Transcript:\n{transcript}"
    return [
        {"role": "system", "content": SUMMARY_INSTRUCTIONS},
        {"role": "user", "content": content},
    ]


class Summarizer:
    """Marks sessions pending and summarizes them, a few at a time, as owned background tasks."""

    def __init__(
        self,
        *,
        store: Store,
        provider: LLMProvider,
        supervisor: TaskSupervisor,
        metrics: Metrics,
        model: str,
        concurrency: int,
    ) -> None:
        self._store = store
        self._provider = provider
        self._supervisor = supervisor
        self._metrics = metrics
        self._model = model
        self._slots = asyncio.Semaphore(concurrency)

    async def request(self, session_id: str) -> None:
        """Mark the session pending (durably) and summarize it in the background."""
        await self._store.set_summary_status(session_id, SummaryStatus.PENDING)
        self._spawn(session_id)

    async def resume_pending(self) -> int:
        """Summaries left pending or running by a stopped process are made now."""
        statuses = [SummaryStatus.PENDING, SummaryStatus.RUNNING]
        session_ids = await self._store.sessions_with_summary_status(statuses)
        for session_id in session_ids:
            self._spawn(session_id)
        return len(session_ids)

    def _spawn(self, session_id: str) -> None:
        self._supervisor.spawn(self._summarize(session_id), name=f"summary-{session_id}")

    async def _summarize(self, session_id: str) -> None:
        async with self._slots:
            try:
                outcome = await self._summarize_now(session_id)
            except (LLMError, StoreError) as e:
                log.warning("summary of %s failed: %s", session_id, e)
                outcome = "failed"
                await self._mark_failed(session_id)
        self._metrics.summaries.labels(outcome=outcome).inc()

    async def _summarize_now(self, session_id: str) -> str:
        record = await self._store.get_session(session_id)
        if record is None:
            return "gone"
        await self._store.set_summary_status(session_id, SummaryStatus.RUNNING)
        events = await self._store.list_events(session_id, after_seq=record.summary_seq, limit=None)
        if not events and record.summary is not None:
            # Resumed and left without new events: the summary still holds.
            await self._store.save_summary(
                session_id, summary=record.summary, summary_seq=record.summary_seq
            )
            return "unchanged"
        messages = summary_prompt(record.summary, events)
        summary = (await complete_text(self._provider, messages, model=self._model)).strip()
        if not summary:
            raise LLMError(ErrorCode.LLM_ERROR, "the model returned an empty summary")
        last_seq = events[-1].seq if events else record.summary_seq
        await self._store.save_summary(session_id, summary=summary, summary_seq=last_seq)
        return "done"

    async def _mark_failed(self, session_id: str) -> None:
        try:
            await self._store.set_summary_status(session_id, SummaryStatus.FAILED)
        except StoreError as e:
            log.error("could not mark the summary of %s failed: %s", session_id, e)
