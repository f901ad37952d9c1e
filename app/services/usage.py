"""Usage limits per owner: tokens per UTC day, live sessions at once, new sessions per UTC hour.

Every count is the store's (`UsageRepository`), so the limits hold across instances and restarts.
A `user.message` is checked before anything of it is stored and before any model call; a
response already running is never cut. Tokens are counted by the store as each answer is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from app.database.base import SHARED_OWNER, UsageRepository
from app.protocol import UsageMeter, UsageView


@dataclass(frozen=True, slots=True)
class UsageLimits:
    """The limits per owner; None is unlimited."""

    tokens_per_day: int | None = None
    max_live_sessions: int | None = None
    sessions_per_hour: int | None = None


LimitName = Literal["tokens_per_day", "live_sessions", "sessions_per_hour"]


class LimitExceeded(Exception):
    """The `limit` is reached: `message` says which and when it resets (`resets_at`, when it
    does by time; a live-sessions limit frees up when another session closes)."""

    def __init__(self, limit: LimitName, message: str, *, resets_at: datetime | None) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.resets_at = resets_at


def day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> datetime:
    return datetime.now(UTC)


class UsageGuard:
    """Checks an owner's usage against the limits, and reports it."""

    def __init__(
        self,
        usage: UsageRepository,
        limits: UsageLimits,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._usage = usage
        self._limits = limits
        self._clock = clock

    @property
    def limits(self) -> UsageLimits:
        return self._limits

    async def admit(self, owner: str | None, *, session_id: str, new_session: bool) -> None:
        """Raise `LimitExceeded` when a message of this owner must be refused now. For the first
        message of a new session, the session is counted in its hour (if it may start)."""
        key = owner if owner is not None else SHARED_OWNER
        now = self._clock()
        await self._check_tokens(key, now)
        await self._check_live(key, session_id)
        if new_session:
            await self._count_session(key, now)

    async def _check_tokens(self, owner: str, now: datetime) -> None:
        limit = self._limits.tokens_per_day
        if limit is None:
            return
        used = await self._usage.amount(owner, "tokens", window_start=day_start(now))
        if used >= limit:
            resets_at = day_start(now) + timedelta(days=1)
            raise LimitExceeded(
                "tokens_per_day",
                f"the daily limit of {limit} tokens is used up ({used} today); "
                f"it resets at {_when(resets_at)}",
                resets_at=resets_at,
            )

    async def _check_live(self, owner: str, session_id: str) -> None:
        limit = self._limits.max_live_sessions
        if limit is None:
            return
        live = await self._usage.live_sessions(owner, limit=limit + 1)
        others = [live_id for live_id in live if live_id != session_id]
        if len(others) >= limit:
            raise LimitExceeded(
                "live_sessions",
                f"{limit} sessions are already live at once (the limit); close one and send again",
                resets_at=None,
            )

    async def _count_session(self, owner: str, now: datetime) -> None:
        limit = self._limits.sessions_per_hour
        if limit is None:
            return
        if not await self._usage.take(owner, "sessions", window_start=hour_start(now), limit=limit):
            resets_at = hour_start(now) + timedelta(hours=1)
            raise LimitExceeded(
                "sessions_per_hour",
                f"the limit of {limit} new sessions an hour is reached; it resets at "
                f"{_when(resets_at)}",
                resets_at=resets_at,
            )

    async def report(self, owner: str | None) -> UsageView:
        """The owner's usage now, with the limits, for `GET /api/usage`."""
        key = owner if owner is not None else SHARED_OWNER
        now = self._clock()
        day, hour = day_start(now), hour_start(now)
        tokens = await self._usage.amount(key, "tokens", window_start=day)
        sessions = await self._usage.amount(key, "sessions", window_start=hour)
        live_cap = (self._limits.max_live_sessions or 1000) + 1
        live = await self._usage.live_sessions(key, limit=live_cap)
        return UsageView(
            tokens_today=UsageMeter(
                used=tokens, limit=self._limits.tokens_per_day, resets_at=day + timedelta(days=1)
            ),
            sessions_this_hour=UsageMeter(
                used=sessions,
                limit=self._limits.sessions_per_hour,
                resets_at=hour + timedelta(hours=1),
            ),
            live_sessions=UsageMeter(
                used=len(live), limit=self._limits.max_live_sessions, resets_at=None
            ),
        )
