"""Summaries written by the model: end-of-session summaries, rolling context summaries, titles.

Transcripts larger than the summary model's window are summarized in parts: each part is
combined with the summary so far, so the result covers everything while every request fits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence

from app.database.base import JobClaim, JobKind, Store, StoreError
from app.protocol import (
    AssistantMessageEvent,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)
from app.services.context import estimate_tokens
from app.services.history import current_events
from app.services.llm.base import (
    ChatMessage,
    LLMError,
    LLMErrorKind,
    LLMProvider,
    ModelRequest,
    SystemPart,
    UserPart,
    complete_text,
)
from app.services.metrics import Metrics
from app.services.storable import storable_text
from app.services.supervisor import TaskSupervisor
from app.services.tracing import Tracing

log = logging.getLogger(__name__)

SESSION_SUMMARY_INSTRUCTIONS = (
    "You summarize chat sessions between a user and an assistant. Write a short factual summary "
    "(at most five sentences) of what the user wanted, what was found or done (including tool "
    "results that mattered) and what is still open. Write only the summary."
)
ROLLING_SUMMARY_INSTRUCTIONS = (
    "You condense the earlier part of a conversation so that the assistant can continue it. "
    "Keep every fact, name, number, decision and open question the assistant may need; drop "
    "pleasantries. At most 200 words. Write only the condensed notes."
)
TITLE_INSTRUCTIONS = (
    "Write a title of at most six words for the conversation below. No quotes, no final period. "
    "Write only the title."
)
# Room kept in the summary model's window for its instructions and its answer.
_ANSWER_ROOM_TOKENS = 600
_LINE_LIMIT_SHARE = 0.5
MAX_TITLE_CHARS = 80
# A title is made from the first exchange: the events read when another instance takes it over.
_TITLE_EVENTS = 40
# A failed summary or title is tried this many times in all, the waits doubling up to a bound.
MAX_JOB_ATTEMPTS = 5
_RETRY_MAX_S = 600.0
# The outcome of a job whose claim the store did not answer.
_UNCLAIMED = "unclaimed"
# At shutdown a job is handed back within this, or its claim goes stale by itself.
_HAND_BACK_TIMEOUT_S = 2.0


def transcript_line(event: StoredEvent) -> str | None:
    """One readable line per event, for summary prompts."""
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


def _prompt(instructions: str, previous: str | None, lines: Sequence[str]) -> list[ChatMessage]:
    transcript = "\n".join(lines)
    if previous:
        content = f"Summary so far:\n{previous}\n\nWhat happened since:\n{transcript}"
    else:
        content = f"Transcript:\n{transcript}"
    return [ModelRequest([SystemPart(instructions), UserPart(content)])]


def _clip(line: str, max_tokens: int) -> str:
    """A single line longer than the window is cut (a huge tool result, say)."""
    if estimate_tokens(line) <= max_tokens:
        return line
    return line[: max_tokens * 3 - 40] + " [... cut ...]"


def _parts(lines: Sequence[str], budget_tokens: int) -> Iterator[list[str]]:
    part: list[str] = []
    used = 0
    for line in lines:
        cost = estimate_tokens(line) + 1
        if part and used + cost > budget_tokens:
            yield part
            part, used = [], 0
        part.append(line)
        used += cost
    if part:
        yield part


async def summarize_in_parts(
    provider: LLMProvider,
    *,
    model: str,
    instructions: str,
    previous: str | None,
    events: Sequence[StoredEvent],
    window_tokens: int,
) -> str:
    """Summarize `events` on top of `previous`, in as many requests as the window needs."""
    answer_room = min(_ANSWER_ROOM_TOKENS, window_tokens // 4)
    room = max(window_tokens - answer_room - estimate_tokens(instructions), 64)
    lines = [_clip(line, int(room * _LINE_LIMIT_SHARE)) for line in _lines(events)]
    summary = previous
    for part in _parts(lines, room - estimate_tokens(summary or "")):
        text = await complete_text(provider, _prompt(instructions, summary, part), model=model)
        if not text.strip():
            raise LLMError(LLMErrorKind.FAILED, "the model returned an empty summary")
        # Model output, stored as the summary, title or rolling summary: storable on every store.
        summary = storable_text(text.strip())
    return summary or ""


def _lines(events: Sequence[StoredEvent]) -> list[str]:
    return [line for line in map(transcript_line, current_events(events)) if line]


class Summarizer:
    """End-of-session summaries and titles, as owned background tasks, a few at a time.

    Several instances may share the store: each job is claimed in the store before it runs
    (exactly one claim wins) with a token that every write of its outcome names, and every
    instance polls for jobs left pending, failed with a retry due, or claimed by an instance
    that died, so none runs twice, none is left undone, and a stale claim cannot overwrite a
    newer outcome. A failed job is retried with backoff, a bounded number of times.
    """

    def __init__(
        self,
        *,
        store: Store,
        provider: LLMProvider,
        supervisor: TaskSupervisor,
        metrics: Metrics,
        model: str,
        title_model: str,
        window_tokens: int,
        concurrency: int,
        claimant: str,
        poll_s: float = 10.0,
        claim_timeout_s: float = 120.0,
        retry_s: float = 5.0,
        tracing: Tracing | None = None,
    ) -> None:
        self._tracing = tracing or Tracing.disabled()
        self._title_model = title_model
        self._store = store
        self._provider = provider
        self._supervisor = supervisor
        self._metrics = metrics
        self._model = model
        self._window_tokens = window_tokens
        self._slots = asyncio.Semaphore(concurrency)
        self._claimant = claimant
        self._poll_s = poll_s
        self._claim_timeout_s = claim_timeout_s
        self._retry_s = retry_s
        # Jobs with a task here already: a poll does not spawn a second one for them.
        self._active: set[str] = set()
        self._stopping = asyncio.Event()

    async def fold(self, previous: str | None, events: Sequence[StoredEvent]) -> str:
        """The rolling context summary: `previous` extended with `events`."""
        return await summarize_in_parts(
            self._provider,
            model=self._model,
            instructions=ROLLING_SUMMARY_INSTRUCTIONS,
            previous=previous,
            events=events,
            window_tokens=self._window_tokens,
        )

    async def request(self, session_id: str) -> None:
        """Mark the session pending (durably) and summarize it in the background."""
        await self._store.jobs.request_summary(session_id)
        self._spawn(session_id)

    async def resume_pending(self) -> int:
        """Look for work any instance left: summaries due (pending, failed with a retry due,
        or claimed by an instance that died), sessions a killed process left with unsummarized
        events and no live lease, and titles left undone. Spawns a task for each (its claim
        decides who makes it)."""
        jobs = self._store.jobs
        session_ids = await jobs.summaries_due(stale_after_s=self._claim_timeout_s)
        for session_id in await jobs.unsummarized_sessions():
            await jobs.request_summary(session_id)
            session_ids.append(session_id)
        spawned = sum(self._spawn(session_id) for session_id in session_ids)
        for session_id in await jobs.titles_due(stale_after_s=self._claim_timeout_s):
            self._spawn_title(session_id, None)
        return spawned

    async def poll(self) -> None:
        """Every `poll_s`, `resume_pending()`, until `stop()`: jobs of any instance get done."""
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(self._poll_s):
                    await self._stopping.wait()
            except TimeoutError:
                try:
                    await self.resume_pending()
                except StoreError as e:
                    log.warning("could not look for summaries to make: %s", e)

    def stop(self) -> None:
        """Shutdown: no more polls (jobs running now finish or are handed back)."""
        self._stopping.set()

    def request_title(self, session_id: str, events: Sequence[StoredEvent]) -> None:
        """Name the session from its first exchange, in the background."""
        self._spawn_title(session_id, list(events))

    def _spawn_title(self, session_id: str, events: list[StoredEvent] | None) -> None:
        key = f"title-{session_id}"
        if key not in self._active:
            self._active.add(key)
            self._supervisor.spawn(self._write_title(session_id, events), name=key, background=True)

    def _spawn(self, session_id: str) -> bool:
        key = f"summary-{session_id}"
        if key in self._active:
            return False
        self._active.add(key)
        self._supervisor.spawn(self._summarize(session_id), name=key, background=True)
        return True

    async def _summarize(self, session_id: str) -> None:
        try:
            async with self._slots:
                outcome = await self._claimed_job(session_id, "summary", None)
        finally:
            self._active.discard(f"summary-{session_id}")
        if outcome not in (None, _UNCLAIMED):
            self._metrics.summaries.labels(outcome=outcome).inc()

    async def _write_title(self, session_id: str, events: list[StoredEvent] | None) -> None:
        try:
            for attempt in range(MAX_JOB_ATTEMPTS):
                async with self._slots:
                    outcome = await self._claimed_job(session_id, "title", events)
                # A title nobody could claim (the store did not answer) is in no list the poll
                # reads (its job was never marked): this task tries again, a few times.
                if outcome != _UNCLAIMED or self._stopping.is_set():
                    return
                await asyncio.sleep(min(self._retry_s * 2**attempt, _RETRY_MAX_S))
        finally:
            self._active.discard(f"title-{session_id}")

    async def _claimed_job(
        self, session_id: str, kind: JobKind, events: list[StoredEvent] | None
    ) -> str | None:
        with self._tracing.job(kind, session_id) as span:
            outcome = await self._claim_and_make(session_id, kind, events)
            span.outcome(outcome)
            return outcome

    async def _claim_and_make(
        self, session_id: str, kind: JobKind, events: list[StoredEvent] | None
    ) -> str | None:
        """Claim the job, then make it; None when another instance (or nobody) had it to do,
        `_UNCLAIMED` when the store did not answer the claim."""
        try:
            claim = await self._store.jobs.claim(
                session_id, kind, claimant=self._claimant, stale_after_s=self._claim_timeout_s
            )
        except StoreError as e:
            log.warning("could not claim the %s of %s: %s", kind, session_id, e)
            return _UNCLAIMED
        if claim is None:
            return None
        self._metrics.jobs_claimed.labels(kind=kind).inc()
        try:
            if kind == "title":
                return await self._title_now(claim, events)
            return await self._summary_now(claim)
        except (LLMError, StoreError) as e:
            log.warning("%s of %s failed: %s", kind, session_id, e)
            await self._fail(claim)
            return "failed"
        except asyncio.CancelledError:
            # Shutdown: hand the job back at once instead of waiting for the claim to go stale.
            await self._hand_back(claim)
            raise

    async def _fail(self, claim: JobClaim) -> None:
        """Retry later with backoff (5 s, 10 s, 20 s ... by default), or give up for good."""
        attempts = claim.attempts + 1
        retry_in = (
            min(self._retry_s * 2 ** (attempts - 1), _RETRY_MAX_S)
            if attempts < MAX_JOB_ATTEMPTS
            else None
        )
        try:
            await self._store.jobs.fail(claim, retry_in_s=retry_in)
        except StoreError as e:
            log.error("could not mark the %s of %s failed: %s", claim.kind, claim.session_id, e)

    async def _hand_back(self, claim: JobClaim) -> None:
        try:
            async with asyncio.timeout(_HAND_BACK_TIMEOUT_S):
                await self._store.jobs.hand_back(claim)
        except (StoreError, TimeoutError) as e:
            log.warning("could not hand back the %s of %s: %s", claim.kind, claim.session_id, e)

    async def _summary_now(self, claim: JobClaim) -> str:
        session_id = claim.session_id
        record = await self._store.sessions.get(session_id)
        if record is None:
            return "gone"
        self._tracing.note_owner(record.owner)
        events = await self._store.events.read(session_id, after_seq=record.summary_seq)
        if not events and record.summary is not None:
            # Resumed and left without new events: the summary still holds.
            await self._store.jobs.finish_summary(
                claim, summary=record.summary, upto_seq=record.summary_seq
            )
            return "unchanged"
        summary = await summarize_in_parts(
            self._provider,
            model=self._model,
            instructions=SESSION_SUMMARY_INSTRUCTIONS,
            previous=record.summary,
            events=events,
            window_tokens=self._window_tokens,
        )
        last_seq = events[-1].seq if events else record.summary_seq
        finished = await self._store.jobs.finish_summary(claim, summary=summary, upto_seq=last_seq)
        return "done" if finished else "superseded"

    async def _title_now(self, claim: JobClaim, events: list[StoredEvent] | None) -> str:
        if events is None:  # taken over from an instance that died: read the first exchange
            events = await self._store.events.read(claim.session_id, limit=_TITLE_EVENTS)
        title = await summarize_in_parts(
            self._provider,
            model=self._title_model,
            instructions=TITLE_INSTRUCTIONS,
            previous=None,
            events=events,
            window_tokens=self._window_tokens,
        )
        finished = await self._store.jobs.finish_title(claim, _clean_title(title))
        return "done" if finished else "superseded"


def _clean_title(text: str) -> str:
    first_line = text.strip().splitlines()[0] if text.strip() else "Conversation"
    return first_line.strip(" \"'*#.")[:MAX_TITLE_CHARS] or "Conversation"
