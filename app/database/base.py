"""The `Store` protocol: the few persistence operations the services need, and its errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import JsonValue

from app.protocol import StoredEvent, SummaryStatus


class StoreError(Exception):
    """A store operation failed; `retryable` says whether trying again may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One row of `sessions`."""

    id: str
    created_at: datetime
    updated_at: datetime
    model: str
    owner: str | None = None
    title: str | None = None
    summary: str | None = None
    summary_status: SummaryStatus = SummaryStatus.NONE
    # Last event seq the stored summary covers, so a resumed session is re-summarized incrementally.
    summary_seq: int = 0
    # Equals the last seq: seqs are gapless from 1.
    event_count: int = 0
    # The rolling summary that stands in for events 1..context_summary_seq in model requests.
    context_summary: str | None = None
    context_summary_seq: int = 0


class LeaseState(StrEnum):
    """What the instance holding a session's lease is doing with it."""

    LIVE = "live"  # a client is connected there
    CLOSING = "closing"  # the client left; its last response is finishing


@dataclass(frozen=True, slots=True)
class SessionCursor:
    """Position in the newest-first session list (the row before which the next page starts)."""

    created_at: datetime
    id: str


@dataclass(frozen=True, slots=True)
class EventRow:
    """A stored event bound to its session, as handed to `Store.append_events`."""

    session_id: str
    event: StoredEvent


class Store(Protocol):
    """Persistence of sessions, their events and the demo user profiles."""

    @property
    def kind(self) -> str:
        """Short name of the backend, shown in logs and `/readyz`."""
        ...

    async def open(self) -> None:
        """Connect and create or migrate the schema."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise `StoreError` unless the store answers."""
        ...

    async def create_session(self, record: SessionRecord) -> None: ...

    async def get_session(self, session_id: str) -> SessionRecord | None: ...

    async def list_sessions(
        self, *, limit: int, before: SessionCursor | None, owner: str | None
    ) -> list[SessionRecord]:
        """Newest first; `owner=None` lists every session."""
        ...

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session and its events; False when it did not exist."""
        ...

    async def append_events(self, rows: Sequence[EventRow]) -> None:
        """Insert events in one transaction; a row whose (session, seq) exists is skipped."""
        ...

    async def list_events(
        self, session_id: str, *, after_seq: int, limit: int | None
    ) -> list[StoredEvent]:
        """Events with `seq > after_seq`, oldest first."""
        ...

    async def last_seq(self, session_id: str) -> int: ...

    async def find_user_message(self, session_id: str, message_id: str) -> StoredEvent | None: ...

    async def set_summary_status(self, session_id: str, status: SummaryStatus) -> None: ...

    async def save_summary(self, session_id: str, *, summary: str, summary_seq: int) -> None:
        """Store a finished summary (status `done`)."""
        ...

    async def set_title(self, session_id: str, title: str) -> None: ...

    async def save_context_summary(self, session_id: str, *, summary: str, upto_seq: int) -> None:
        """Store the rolling summary that replaces events `1..upto_seq` in model requests."""
        ...

    async def sessions_with_summary_status(
        self, statuses: Sequence[SummaryStatus]
    ) -> list[str]: ...

    async def sessions_with_unsummarized_events(self) -> list[str]:
        """Sessions whose events go past their summary, that are not marked pending, running or
        failed and hold no unexpired lease: what a killed process left behind while clients were
        connected (a session live on another instance is not summarized under its feet)."""
        ...

    async def acquire_lease(
        self, session_id: str, *, holder: str, ttl_s: float
    ) -> LeaseState | None:
        """Take the session's lease for `ttl_s` when it is free, expired or already `holder`'s
        (None); otherwise the state of the other holder's lease."""
        ...

    async def mark_lease_closing(self, session_id: str, *, holder: str) -> None:
        """The client left; a resume elsewhere waits for the release instead of being refused."""
        ...

    async def renew_leases(
        self, session_ids: Sequence[str], *, holder: str, ttl_s: float
    ) -> set[str]:
        """Extend `holder`'s leases of these sessions by `ttl_s`; the ids still held."""
        ...

    async def release_lease(self, session_id: str, *, holder: str) -> None:
        """Drop `holder`'s lease of the session (nothing when another instance holds it)."""
        ...

    async def claim_summary(self, session_id: str, *, stale_after_s: float) -> bool:
        """Atomically move a `pending` summary (or one `running` for longer than `stale_after_s`:
        its instance died) to `running`; False when another claim won or nothing is to do."""
        ...

    async def claim_title(self, session_id: str, *, stale_after_s: float) -> bool:
        """Atomically move the title job from `none`/`pending` (or a stale `running`) to `running`,
        unless the session has a title; False when another claim won."""
        ...

    async def sessions_with_stale_titles(self, *, stale_after_s: float) -> list[str]:
        """Sessions whose title job is `pending`, or `running` for longer than `stale_after_s`."""
        ...

    async def upsert_user_profiles(self, profiles: dict[str, dict[str, JsonValue]]) -> None: ...

    async def get_user_profile(self, user_id: str) -> dict[str, JsonValue] | None: ...
