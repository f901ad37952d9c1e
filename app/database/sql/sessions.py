"""Session rows in SQL (SQLite and PostgreSQL alike)."""

from __future__ import annotations

from app.database.base import (
    SESSION_COLUMNS,
    Row,
    SessionCursor,
    SessionRecord,
    StoreError,
    session_from_row,
    session_values,
)
from app.database.sql import Dialect, SqlRunner, canonical_id

_COLUMNS = ", ".join(f"s.{column}" for column in SESSION_COLUMNS) + (
    # Live anywhere: some instance's client holds an unexpired lease.
    ", exists (select 1 from session_leases l where l.session_id = s.id and l.state = 'live' "
    "and l.expires_at > now()) as live"
)
_INSERT = (
    f"insert into sessions ({', '.join(SESSION_COLUMNS)}) "
    f"values ({', '.join(f':{column}' for column in SESSION_COLUMNS)})"
)


def _session(row: Row, dialect: Dialect) -> SessionRecord:
    return session_from_row(row, read_time=dialect.read_time, live=bool(row["live"]))


class SqlSessions:
    """`SessionRepository` in SQL."""

    def __init__(self, runner: SqlRunner) -> None:
        self._runner = runner

    async def create(self, record: SessionRecord) -> None:
        session_id = canonical_id(record.id)
        if session_id is None:
            raise StoreError(f"a session id must be a UUID, not {record.id!r}", retryable=False)
        await self._runner.write(_INSERT, session_values(record, session_id))

    async def get(self, session_id: str) -> SessionRecord | None:
        key = canonical_id(session_id)
        if key is None:
            return None
        rows = await self._runner.read(
            f"select {_COLUMNS} from sessions s where s.id = :id", {"id": key}
        )
        return _session(rows[0], self._runner.dialect) if rows else None

    async def list(
        self, *, limit: int, before: SessionCursor | None, owner: str | None
    ) -> list[SessionRecord]:
        clauses: list[str] = []
        params: dict[str, object] = {"limit": limit}
        if owner is not None:
            clauses.append("s.owner = :owner")
            params["owner"] = owner
        if before is not None:
            cursor_id = canonical_id(before.id)
            if cursor_id is None:
                return []
            # Spelled out rather than a row comparison, so both planners use the index.
            clauses.append(
                "(s.created_at < :before_at or (s.created_at = :before_at and s.id < :before_id))"
            )
            params |= {"before_at": before.created_at, "before_id": cursor_id}
        where = f"where {' and '.join(clauses)}" if clauses else ""
        rows = await self._runner.read(
            f"select {_COLUMNS} from sessions s {where} "
            "order by s.created_at desc, s.id desc limit :limit",
            params,
        )
        return [_session(row, self._runner.dialect) for row in rows]

    async def delete(self, session_id: str) -> bool:
        key = canonical_id(session_id)
        if key is None:
            return False
        return await self._runner.write("delete from sessions where id = :id", {"id": key}) > 0

    async def save_context_summary(self, session_id: str, *, summary: str, upto_seq: int) -> None:
        key = canonical_id(session_id)
        if key is None:
            return
        await self._runner.write(
            "update sessions set context_summary = :summary, context_summary_seq = :upto "
            "where id = :id and context_summary_seq <= :upto",
            {"id": key, "summary": summary, "upto": upto_seq},
        )
