"""Reading the event log in SQL (SQLite and PostgreSQL alike); each store appends its own way."""

from __future__ import annotations

from app.database.sql import SqlRunner, canonical_id
from app.protocol import StoredEvent, stored_event_adapter


def event_data(event: StoredEvent) -> str:
    """The event as stored in `session_events.data`: its JSON form (as sent to clients)."""
    return stored_event_adapter.dump_json(event).decode()


def message_id_of(event: StoredEvent) -> str | None:
    """The client's id of a user message (unique per session), else None."""
    return event.id if event.type == "user.message" else None


class SqlEventReads:
    """The `read` half of `EventLog` in SQL."""

    def __init__(self, runner: SqlRunner) -> None:
        self._runner = runner

    async def read(
        self, session_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        key = canonical_id(session_id)
        if key is None:
            return []
        sql = "select data from session_events where session_id = :id and seq > :after order by seq"
        params: dict[str, object] = {"id": key, "after": after_seq}
        if limit is not None:
            sql += " limit :limit"
            params["limit"] = limit
        rows = await self._runner.read(sql, params)
        return [stored_event_adapter.validate_json(row["data"]) for row in rows]
