"""Session leases in SQL (SQLite and PostgreSQL alike); the database's clock judges expiry."""

from __future__ import annotations

from collections.abc import Sequence

from app.database.base import Lease, LeaseState, MissingRow, StoreError, page
from app.database.sql import SqlRunner, canonical_id

# Free, expired or already this holder's: taken, with the next epoch (a row comes back). Else
# nothing comes back. A session that does not exist gets no row either (the select finds none).
_ACQUIRE = (
    "insert into session_leases (session_id, holder, state, expires_at, epoch) "
    "select :id, :holder, 'live', seconds_from_now(:ttl), 1 "
    "where exists (select 1 from sessions where id = :id) "
    "on conflict (session_id) do update set holder = excluded.holder, state = 'live', "
    "expires_at = excluded.expires_at, epoch = session_leases.epoch + 1 "
    "where session_leases.state = 'free' or session_leases.expires_at <= now() "
    "or session_leases.holder = excluded.holder "
    "returning epoch"
)
_HOLDING = "session_id = :id and holder = :holder and epoch = :epoch and state <> 'free'"
# Ids per renewal statement: a holder with thousands of sessions renews them in pages.
RENEW_PAGE = 200


class SqlLeases:
    """`LeaseRepository` in SQL."""

    def __init__(self, runner: SqlRunner) -> None:
        self._runner = runner

    async def acquire(
        self, session_id: str, *, holder: str, ttl_s: float
    ) -> Lease | LeaseState | None:
        key = canonical_id(session_id)
        if key is None:
            return None
        params = {"id": key, "holder": holder, "ttl": ttl_s}
        try:
            taken = await self._runner.write_returning(_ACQUIRE, params)
        except MissingRow:
            return None  # deleted between the statement's check and its insert
        if taken:
            return Lease(key, holder, int(taken[0]["epoch"]))
        rows = await self._runner.read(
            "select (select state from session_leases where session_id = :id) as state, "
            "exists (select 1 from sessions where id = :id) as found",
            {"id": key},
        )
        if not rows or not rows[0]["found"]:
            return None
        state = rows[0]["state"]
        # Released between the two statements: report it as finishing, so the caller asks again.
        return LeaseState.CLOSING if state in (None, "free") else LeaseState(state)

    async def mark_closing(self, lease: Lease) -> None:
        await self._update(lease, "state = 'closing'")

    async def mark_live(self, lease: Lease) -> None:
        await self._update(lease, "state = 'live'")

    async def release(self, lease: Lease) -> None:
        await self._update(lease, "state = 'free'")

    async def _update(self, lease: Lease, assignment: str) -> None:
        params = {"id": lease.session_id, "holder": lease.holder, "epoch": lease.epoch}
        await self._runner.write(f"update session_leases set {assignment} where {_HOLDING}", params)

    async def renew(self, leases: Sequence[Lease], *, ttl_s: float) -> set[str]:
        by_id = {lease.session_id: lease for lease in leases}
        holders = {lease.holder for lease in leases}
        if len(holders) > 1:
            raise StoreError("leases are renewed by their one holder", retryable=False)
        held: set[str] = set()
        for ids in page(sorted(by_id), RENEW_PAGE):
            renewed = await self._runner.write_returning(
                "update session_leases set expires_at = seconds_from_now(:ttl) "
                "where holder = :holder and state <> 'free' and session_id in (:ids) "
                "returning session_id, epoch",
                {"ttl": ttl_s, "holder": next(iter(holders)), "ids": list(ids)},
            )
            held |= {
                str(row["session_id"])
                for row in renewed
                if by_id[str(row["session_id"])].epoch == row["epoch"]
            }
        return held

    async def release_holder(self, holder: str) -> int:
        return await self._runner.write(
            "update session_leases set state = 'free' where holder = :holder and state <> 'free'",
            {"holder": holder},
        )
