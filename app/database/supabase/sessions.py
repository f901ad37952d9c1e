"""Session rows over REST."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from postgrest.types import ReturnMethod

from app.database.base import (
    SESSION_COLUMNS,
    SessionCursor,
    SessionRecord,
    StoreError,
    page,
    session_from_row,
    session_values,
)
from app.database.supabase.rest import IDS_PER_REQUEST, RestClient, Row, as_uuid, moment, quoted

_SELECTED = ",".join(SESSION_COLUMNS)


def _session_row(record: SessionRecord, session_id: str) -> Row:
    values = session_values(record, session_id)
    return values | {
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def _session(row: Row, *, live: bool) -> SessionRecord:
    return session_from_row(row, read_time=datetime.fromisoformat, live=live)


class RestSessions:
    """`SessionRepository` over REST."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    async def create(self, record: SessionRecord) -> None:
        session_id = as_uuid(record.id)
        if session_id is None:
            raise StoreError(f"a session id must be a UUID, not {record.id!r}", retryable=False)
        query = self._rest.table("sessions").insert(
            _session_row(record, session_id), returning=ReturnMethod.minimal
        )
        await self._rest.run(query, "cannot create the session")

    async def get(self, session_id: str) -> SessionRecord | None:
        key = as_uuid(session_id)
        if key is None:
            return None
        query = self._rest.table("sessions").select(_SELECTED).eq("id", key).limit(1)
        rows = await self._rest.run(query, "cannot read the session")
        if not rows:
            return None
        return _session(rows[0], live=key in await self.live_among([key]))

    async def list(
        self, *, limit: int, before: SessionCursor | None, owner: str | None
    ) -> list[SessionRecord]:
        query = self._rest.table("sessions").select(_SELECTED)
        if owner is not None:
            query = query.eq("owner", owner)
        if before is not None:
            cursor_id = as_uuid(before.id)
            if cursor_id is None:
                return []
            at = quoted(before.created_at.isoformat())
            query = query.or_(f"created_at.lt.{at},and(created_at.eq.{at},id.lt.{cursor_id})")
        query = query.order("created_at", desc=True).order("id", desc=True).limit(limit)
        rows = await self._rest.run(query, "cannot list sessions")
        live = await self.live_among([str(row["id"]) for row in rows])
        return [_session(row, live=str(row["id"]) in live) for row in rows]

    async def live_among(self, session_ids: Sequence[str]) -> set[str]:
        """The sessions among these whose lease is live and unexpired (by this instance's clock)."""
        live: set[str] = set()
        for ids in page(session_ids, IDS_PER_REQUEST):
            query = (
                self._rest.table("session_leases")
                .select("session_id")
                .in_("session_id", list(ids))
                .eq("state", "live")
                .gt("expires_at", moment())
                .limit(len(ids))
            )
            rows = await self._rest.run(query, "cannot read leases")
            live |= {str(row["session_id"]) for row in rows}
        return live

    async def delete(self, session_id: str) -> bool:
        key = as_uuid(session_id)
        if key is None:
            return False
        query = (
            self._rest.table("sessions")
            .delete(returning=ReturnMethod.representation)
            .select("id")
            .eq("id", key)
        )
        return bool(await self._rest.run(query, "cannot delete the session"))

    async def save_context_summary(self, session_id: str, *, summary: str, upto_seq: int) -> None:
        key = as_uuid(session_id)
        if key is None:
            return
        values = {"context_summary": summary, "context_summary_seq": upto_seq}
        query = (
            self._rest.table("sessions")
            .update(values, returning=ReturnMethod.minimal)
            .eq("id", key)
            .lte("context_summary_seq", upto_seq)
        )
        await self._rest.run(query, "cannot store the rolling summary")
