"""The retention sweep in SQL (SQLite and PostgreSQL alike)."""

from __future__ import annotations

from datetime import datetime

from app.database.base import RetentionKind
from app.database.sql import SqlRunner

# `kind` is a RetentionKind literal: the only text ever formatted into this statement.
_CHOSEN = {
    "empty": "s.event_count = 0 and s.created_at < :before",
    "idle": "s.updated_at < :before",
}
# A live or closing lease that has not expired protects its session: never delete one in use.
_DELETE = (
    "delete from sessions where id in (select s.id from sessions s where {chosen} "
    "and not exists (select 1 from session_leases l where l.session_id = s.id "
    "and l.state <> 'free' and l.expires_at > now()) limit :batch)"
)
_CLAIM = (
    "insert into housekeeping_claims (name, holder, expires_at) "
    "values (:name, :holder, seconds_from_now(:ttl)) "
    "on conflict (name) do update set holder = excluded.holder, expires_at = excluded.expires_at "
    "where housekeeping_claims.expires_at < now() "
    "or housekeeping_claims.holder = excluded.holder returning holder"
)


class SqlRetention:
    """`RetentionRepository` in SQL."""

    def __init__(self, runner: SqlRunner) -> None:
        self._runner = runner

    async def claim(self, name: str, *, holder: str, ttl_s: float) -> bool:
        claimed = await self._runner.write_returning(
            _CLAIM, {"name": name, "holder": holder, "ttl": ttl_s}
        )
        return bool(claimed)

    async def delete_sessions(self, kind: RetentionKind, *, before: datetime, batch: int) -> int:
        return await self._runner.write(
            _DELETE.format(chosen=_CHOSEN[kind]), {"before": before, "batch": batch}
        )
