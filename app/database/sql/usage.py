"""Usage per owner in SQL (SQLite and PostgreSQL alike); the tokens are counted by the schema's
trigger on `session_events` as answers are appended."""

from __future__ import annotations

from datetime import datetime

from app.database.base import UsageKind
from app.database.sql import SqlRunner

# The row of a window is made by its first use; beyond `limit` the update's condition fails and
# nothing comes back. One statement, so instances racing for the last one cannot both have it.
_TAKE = (
    "insert into owner_usage (owner, kind, window_start, amount) "
    "values (:owner, :kind, :window_start, 1) "
    "on conflict (owner, kind, window_start) do update set amount = owner_usage.amount + 1 "
    "where owner_usage.amount < :limit returning amount"
)
_LIVE = (
    "select l.session_id from session_leases l join sessions s on s.id = l.session_id "
    "where coalesce(s.owner, '') = :owner and l.state = 'live' and l.expires_at > now() "
    "limit :limit"
)


class SqlUsage:
    """`UsageRepository` in SQL."""

    def __init__(self, runner: SqlRunner) -> None:
        self._runner = runner

    async def amount(self, owner: str, kind: UsageKind, *, window_start: datetime) -> int:
        rows = await self._runner.read(
            "select amount from owner_usage "
            "where owner = :owner and kind = :kind and window_start = :window_start",
            {"owner": owner, "kind": kind, "window_start": window_start},
        )
        return int(rows[0]["amount"]) if rows else 0

    async def take(
        self, owner: str, kind: UsageKind, *, window_start: datetime, limit: int
    ) -> bool:
        taken = await self._runner.write_returning(
            _TAKE, {"owner": owner, "kind": kind, "window_start": window_start, "limit": limit}
        )
        return bool(taken)

    async def live_sessions(self, owner: str, *, limit: int) -> list[str]:
        rows = await self._runner.read(_LIVE, {"owner": owner, "limit": limit})
        return [str(row["session_id"]) for row in rows]

    async def forget_before(self, before: datetime) -> int:
        return await self._runner.write(
            "delete from owner_usage where window_start < :before", {"before": before}
        )
