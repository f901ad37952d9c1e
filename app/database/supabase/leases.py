"""Session leases over REST.

PostgREST runs one statement per request, so taking a lease is a compare-and-swap: insert it if
there is none, else read it and, when it may be taken (free, expired, or this holder's), update
it on the condition that its epoch is still the one read. Expiry is judged by this instance's
clock (instances must keep NTP time; see docs/deployment.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from postgrest.types import ReturnMethod

from app.database.base import Lease, LeaseState, StoreError, page
from app.database.supabase.rest import (
    FOREIGN_KEY_VIOLATION,
    IDS_PER_REQUEST,
    RestClient,
    RestError,
    Row,
    as_uuid,
    moment,
)

# Compare-and-swap rounds lost to other instances before answering "busy, ask again".
_ACQUIRE_ROUNDS = 4


def _takeable(row: Row, holder: str) -> bool:
    expired = datetime.fromisoformat(row["expires_at"]) <= datetime.fromisoformat(moment())
    return row["state"] == "free" or expired or row["holder"] == holder


class RestLeases:
    """`LeaseRepository` over REST."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    async def acquire(
        self, session_id: str, *, holder: str, ttl_s: float
    ) -> Lease | LeaseState | None:
        key = as_uuid(session_id)
        if key is None:
            return None
        lease = {"session_id": key, "holder": holder, "state": "live", "expires_at": moment(ttl_s)}
        for _ in range(_ACQUIRE_ROUNDS):
            try:
                if await self._insert(lease | {"epoch": 1}):
                    return Lease(key, holder, 1)
            except RestError as e:
                if e.code == FOREIGN_KEY_VIOLATION:
                    return None  # no such session
                raise
            current = await self._read(key)
            if current is None:
                continue  # gone between the two requests: try the insert again
            if not _takeable(current, holder):
                return LeaseState(current["state"])
            epoch = int(current["epoch"]) + 1
            if await self._swap(key, int(current["epoch"]), lease | {"epoch": epoch}):
                return Lease(key, holder, epoch)
        return LeaseState.CLOSING  # other instances keep winning: the caller asks again

    async def _insert(self, lease: Row) -> bool:
        query = self._rest.table("session_leases").upsert(
            lease,
            on_conflict="session_id",
            ignore_duplicates=True,
            returning=ReturnMethod.representation,
        )
        return bool(await self._rest.run(query, "cannot take the session's lease"))

    async def _read(self, key: str) -> Row | None:
        query = (
            self._rest.table("session_leases")
            .select("state,holder,epoch,expires_at")
            .eq("session_id", key)
            .limit(1)
        )
        rows = await self._rest.run(query, "cannot read the session's lease")
        return rows[0] if rows else None

    async def _swap(self, key: str, epoch: int, lease: Row) -> bool:
        query = (
            self._rest.table("session_leases")
            .update(lease, returning=ReturnMethod.representation)
            .eq("session_id", key)
            .eq("epoch", epoch)
        )
        return bool(await self._rest.run(query, "cannot take the session's lease"))

    async def mark_closing(self, lease: Lease) -> None:
        await self._update(lease, {"state": "closing"})

    async def mark_live(self, lease: Lease) -> None:
        await self._update(lease, {"state": "live"})

    async def release(self, lease: Lease) -> None:
        await self._update(lease, {"state": "free"})

    async def _update(self, lease: Lease, values: Row) -> None:
        query = (
            self._rest.table("session_leases")
            .update(values, returning=ReturnMethod.minimal)
            .eq("session_id", lease.session_id)
            .eq("holder", lease.holder)
            .eq("epoch", lease.epoch)
            .neq("state", "free")
        )
        await self._rest.run(query, "cannot update the session's lease")

    async def renew(self, leases: Sequence[Lease], *, ttl_s: float) -> set[str]:
        by_id = {lease.session_id: lease for lease in leases}
        holders = {lease.holder for lease in leases}
        if len(holders) > 1:
            raise StoreError("leases are renewed by their one holder", retryable=False)
        held: set[str] = set()
        for ids in page(sorted(by_id), IDS_PER_REQUEST):
            query = (
                self._rest.table("session_leases")
                .update({"expires_at": moment(ttl_s)}, returning=ReturnMethod.representation)
                .eq("holder", next(iter(holders)))
                .neq("state", "free")
                .in_("session_id", list(ids))
            )
            rows = await self._rest.run(query, "cannot renew leases")
            held |= {
                str(row["session_id"])
                for row in rows
                if by_id[str(row["session_id"])].epoch == int(row["epoch"])
            }
        return held

    async def release_holder(self, holder: str) -> int:
        query = (
            self._rest.table("session_leases")
            .update({"state": "free"}, returning=ReturnMethod.representation)
            .eq("holder", holder)
            .neq("state", "free")
        )
        return len(await self._rest.run(query, "cannot release a dead instance's leases"))
