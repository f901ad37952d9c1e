"""The retention sweep: empty sessions older than a day always go; with `RETENTION_DAYS`,
sessions idle longer than that go too (their events, lease and summaries with them).

One instance at a time sweeps (a housekeeping claim in the store, renewed at each sweep and
taken over when its holder stops renewing it). Deletes go in small batches, each its own short
statement, so live traffic is never held up; a session that a live or closing lease holds is
never deleted (the statement itself checks it).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from app.database.base import RetentionKind, RetentionRepository, StoreError, UsageRepository

log = logging.getLogger(__name__)

CLAIM = "retention"
EMPTY_AFTER = timedelta(days=1)
# Usage windows are at most a day long; older ones are never read again.
USAGE_KEPT = timedelta(days=2)


class RetentionSweeper:
    """Sweeps old sessions away every `sweep_s`, while it holds the claim."""

    def __init__(
        self,
        retention: RetentionRepository,
        usage: UsageRepository,
        *,
        holder: str,
        retention_days: float | None,
        sweep_s: float,
        batch: int,
    ) -> None:
        self._retention = retention
        self._usage = usage
        self._holder = holder
        self._idle_after = timedelta(days=retention_days) if retention_days else None
        self._sweep_s = sweep_s
        self._batch = batch
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Sweep every `sweep_s` until stopped; a store error waits for the next round."""
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except StoreError as e:
                log.warning("the retention sweep failed; trying again later: %s", e)
            try:
                async with asyncio.timeout(self._sweep_s):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    async def sweep(self) -> int:
        """One round, if this instance holds the claim; how many sessions were deleted."""
        # The claim outlives one round: a holder that dies is replaced after two.
        if not await self._retention.claim(CLAIM, holder=self._holder, ttl_s=2 * self._sweep_s):
            return 0
        now = datetime.now(UTC)
        deleted = await self._delete("empty", now - EMPTY_AFTER)
        if self._idle_after is not None:
            deleted += await self._delete("idle", now - self._idle_after)
        await self._usage.forget_before(now - USAGE_KEPT)
        if deleted:
            log.info("retention: deleted %d sessions", deleted)
        return deleted

    async def _delete(self, kind: RetentionKind, before: datetime) -> int:
        total = 0
        while not self._stopping.is_set():
            deleted = await self._retention.delete_sessions(kind, before=before, batch=self._batch)
            total += deleted
            if deleted < self._batch:
                break
            await asyncio.sleep(0)  # between batches, whatever else waits goes first
        return total
