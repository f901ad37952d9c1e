"""Usage per owner and the retention sweep over REST: each step is one call of a function of the
schema (one statement, as in the SQL stores); the tokens are counted by the schema's trigger."""

from __future__ import annotations

from datetime import datetime

from postgrest.types import ReturnMethod

from app.database.base import RetentionKind, UsageKind
from app.database.supabase.rest import RestClient


class RestUsage:
    """`UsageRepository` over REST."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    async def amount(self, owner: str, kind: UsageKind, *, window_start: datetime) -> int:
        query = (
            self._rest.table("owner_usage")
            .select("amount")
            .eq("owner", owner)
            .eq("kind", kind)
            .eq("window_start", window_start.isoformat())
            .limit(1)
        )
        rows = await self._rest.run(query, "cannot read usage")
        return int(rows[0]["amount"]) if rows else 0

    async def take(
        self, owner: str, kind: UsageKind, *, window_start: datetime, limit: int
    ) -> bool:
        request = {
            "owner": owner,
            "kind": kind,
            "window_start": window_start.isoformat(),
            "limit": limit,
        }
        return await self._rest.call("take_owner_usage", request, "cannot count usage") is True

    async def live_sessions(self, owner: str, *, limit: int) -> list[str]:
        request = {"owner": owner, "limit": limit}
        live = await self._rest.call("live_sessions_of", request, "cannot read live sessions")
        return [str(session_id) for session_id in live] if isinstance(live, list) else []

    async def forget_before(self, before: datetime) -> int:
        query = (
            self._rest.table("owner_usage")
            .delete(returning=ReturnMethod.representation)
            .select("owner")
            .lt("window_start", before.isoformat())
        )
        return len(await self._rest.run(query, "cannot forget old usage"))


class RestRetention:
    """`RetentionRepository` over REST."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    async def claim(self, name: str, *, holder: str, ttl_s: float) -> bool:
        request = {"name": name, "holder": holder, "ttl_s": ttl_s}
        claimed = await self._rest.call("claim_housekeeping", request, "cannot claim the sweep")
        return claimed is True

    async def delete_sessions(self, kind: RetentionKind, *, before: datetime, batch: int) -> int:
        request = {"kind": kind, "before": before.isoformat(), "batch": batch}
        deleted = await self._rest.call("delete_old_sessions", request, "cannot delete sessions")
        return deleted if isinstance(deleted, int) else 0
