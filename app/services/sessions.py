"""Reading and deleting sessions for the REST API, scoped to their owner."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta

from app.database.base import SessionCursor, SessionRecord, Store
from app.protocol import EventPage, SessionPage, SessionView
from app.services.approvals import open_approvals
from app.services.history import queued_backlog
from app.services.hub import SessionHub, parse_session_id, visible_to


class SessionNotFound(Exception):
    """No session with that id is visible to the caller."""


class InvalidCursor(Exception):
    """A `before` cursor that this server did not hand out."""


def encode_cursor(record: SessionRecord) -> str:
    raw = f"{record.created_at.isoformat()}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> SessionCursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, session_id = raw.split("|", 1)
        # Cursors we hand out are UTC; anything else (naive, out of range) was not made here.
        created_at = datetime.fromisoformat(moment).astimezone(UTC)
        if created_at.utcoffset() != timedelta(0) or moment != created_at.isoformat():
            raise ValueError("not a cursor of this server")
        return SessionCursor(created_at=created_at, id=session_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as e:
        raise InvalidCursor(cursor) from e


class SessionDirectory:
    """The REST view of sessions: live status from the hub and the leases, the rest from the
    store."""

    def __init__(self, store: Store, hub: SessionHub) -> None:
        self._store = store
        self._hub = hub

    def view(self, record: SessionRecord) -> SessionView:
        # Active while a client is connected, here or on any other instance (its live lease).
        active = record.live or self._hub.is_live(record.id)
        return SessionView(
            id=record.id,
            status="active" if active else "idle",
            created_at=record.created_at,
            updated_at=record.updated_at,
            title=record.title,
            summary=record.summary,
            summary_status=record.summary_status,
            event_count=record.event_count,
            model=record.model,
        )

    async def detail(self, record: SessionRecord) -> SessionView:
        """`view`, with what waits in the session: approvals and queued messages (from the
        conversation when it is live here, else from its stored events)."""
        waiting = self._hub.waiting_here(record.id)
        if waiting is None:
            events = await self._store.events.read(record.id)
            waiting = open_approvals(events), len(queued_backlog(events))
        approvals, queued = waiting
        return self.view(record).model_copy(
            update={"pending_approvals": approvals, "queue_length": queued}
        )

    async def list(self, *, limit: int, before: str | None, owner: str | None) -> SessionPage:
        cursor = decode_cursor(before) if before else None
        # One extra row tells whether another page exists.
        records = await self._store.sessions.list(limit=limit + 1, before=cursor, owner=owner)
        page = records[:limit]
        next_cursor = encode_cursor(page[-1]) if len(records) > limit else None
        return SessionPage(sessions=[self.view(record) for record in page], next=next_cursor)

    async def get(self, raw_id: str, *, owner: str | None) -> SessionRecord:
        session_id = parse_session_id(raw_id)
        record = await self._store.sessions.get(session_id) if session_id else None
        if record is None or not visible_to(record, owner):
            raise SessionNotFound(raw_id)
        return record

    async def events(
        self, raw_id: str, *, after_seq: int, limit: int, owner: str | None
    ) -> EventPage:
        record = await self.get(raw_id, owner=owner)
        events = await self._store.events.read(record.id, after_seq=after_seq, limit=limit)
        return EventPage(events=events)

    async def delete(self, raw_id: str, *, owner: str | None) -> None:
        """Delete the session and its events. A conversation live on it ends: here at once
        (`session_not_found`, close 4404), on another instance when its next write or lease
        renewal is refused (the deletion took the lease with it)."""
        record = await self.get(raw_id, owner=owner)
        self._hub.end_deleted(record.id)
        await self._store.sessions.delete(record.id)
