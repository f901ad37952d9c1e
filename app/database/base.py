"""The `Store` protocol: the few persistence operations the services need, and its errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
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
        """Sessions whose events go past their summary and that are not marked pending, running
        or failed: what a killed process left behind while clients were connected."""
        ...

    async def upsert_user_profiles(self, profiles: dict[str, dict[str, JsonValue]]) -> None: ...

    async def get_user_profile(self, user_id: str) -> dict[str, JsonValue] | None: ...
