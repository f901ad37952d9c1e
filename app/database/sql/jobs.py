"""Summary and title job claims in SQL (SQLite and PostgreSQL alike).

Each job lives in its session's row as `<kind>_status`, `_claim` (the token), `_claimed_by`,
`_claimed_at`, `_attempts` and `_retry_at`. A claim is one conditional UPDATE: concurrent
claimers serialize on the row, and the loser finds the condition false once the winner commits.
Every later write of the job names its token, so an instance whose claim was taken over (it was
presumed dead) or reset (the session changed) cannot overwrite the newer outcome.
"""

from __future__ import annotations

import uuid

from app.database.base import JobClaim, JobKind
from app.database.sql import SqlRunner, canonical_id

# `kind` is a JobKind literal: the only text ever formatted into these statements.
_STALE = "({k}_claimed_at is null or {k}_claimed_at < seconds_from_now(:stale_from))"
_RETRY_DUE = "{k}_retry_at is not null and {k}_retry_at <= now()"
_DUE = {
    "summary": (
        "(summary_status = 'pending' or (summary_status = 'failed' and "
        + _RETRY_DUE.format(k="summary")
        + ") or (summary_status = 'running' and "
        + _STALE.format(k="summary")
        + "))"
    ),
    # A title is made once: never over an existing one; `none` is claimed by the conversation
    # that asks for it after the first exchange.
    "title": (
        "title is null and (title_status in ('none', 'pending') or (title_status = 'failed' and "
        + _RETRY_DUE.format(k="title")
        + ") or (title_status = 'running' and "
        + _STALE.format(k="title")
        + "))"
    ),
}
_RELEASED = "{k}_claim = null, {k}_claimed_by = null"


class SqlJobs:
    """`JobClaims` in SQL."""

    def __init__(self, runner: SqlRunner) -> None:
        self._runner = runner

    async def request_summary(self, session_id: str) -> None:
        key = canonical_id(session_id)
        if key is None:
            return
        await self._runner.write(
            "update sessions set summary_status = 'pending', summary_attempts = 0, "
            f"summary_retry_at = null, {_RELEASED.format(k='summary')} where id = :id",
            {"id": key},
        )

    async def summaries_due(self, *, stale_after_s: float) -> list[str]:
        rows = await self._runner.read(
            f"select id from sessions where {_DUE['summary']} order by updated_at limit 1000",
            {"stale_from": -stale_after_s},
        )
        return [str(row["id"]) for row in rows]

    async def titles_due(self, *, stale_after_s: float) -> list[str]:
        # Not `none`: a session nobody asked a title for yet has nothing to name.
        rows = await self._runner.read(
            f"select id from sessions where {_DUE['title']} and title_status <> 'none' "
            "order by updated_at limit 1000",
            {"stale_from": -stale_after_s},
        )
        return [str(row["id"]) for row in rows]

    async def unsummarized_sessions(self) -> list[str]:
        rows = await self._runner.read(
            "select id from sessions s where summary_behind "
            "and summary_status in ('none', 'done') and not exists (select 1 from "
            "session_leases l where l.session_id = s.id and l.state <> 'free' "
            "and l.expires_at > now()) order by updated_at limit 1000",
            {},
        )
        return [str(row["id"]) for row in rows]

    async def claim(
        self, session_id: str, kind: JobKind, *, claimant: str, stale_after_s: float
    ) -> JobClaim | None:
        key = canonical_id(session_id)
        if key is None:
            return None
        token = uuid.uuid4().hex
        claimed = await self._runner.write_returning(
            f"update sessions set {kind}_status = 'running', {kind}_claimed_at = now(), "
            f"{kind}_claim = :token, {kind}_claimed_by = :claimant "
            f"where id = :id and {_DUE[kind]} returning {kind}_attempts as attempts",
            {"id": key, "token": token, "claimant": claimant, "stale_from": -stale_after_s},
        )
        if not claimed:
            return None
        return JobClaim(key, kind, token, int(claimed[0]["attempts"]))

    async def finish_summary(self, claim: JobClaim, *, summary: str, upto_seq: int) -> bool:
        finished = await self._runner.write(
            "update sessions set summary = :summary, summary_seq = :upto, "
            "summary_status = 'done', summary_attempts = 0, summary_retry_at = null, "
            f"{_RELEASED.format(k='summary')} "
            "where id = :id and summary_claim = :token and summary_seq <= :upto",
            {"id": claim.session_id, "token": claim.token, "summary": summary, "upto": upto_seq},
        )
        return finished > 0

    async def finish_title(self, claim: JobClaim, title: str) -> bool:
        finished = await self._runner.write(
            "update sessions set title = :title, title_status = 'done', title_attempts = 0, "
            f"title_retry_at = null, {_RELEASED.format(k='title')} "
            "where id = :id and title_claim = :token",
            {"id": claim.session_id, "token": claim.token, "title": title},
        )
        return finished > 0

    async def fail(self, claim: JobClaim, *, retry_in_s: float | None) -> None:
        k = claim.kind
        retry_at = "null" if retry_in_s is None else "seconds_from_now(:retry_in)"
        params: dict[str, object] = {"id": claim.session_id, "token": claim.token}
        if retry_in_s is not None:
            params["retry_in"] = retry_in_s
        await self._runner.write(
            f"update sessions set {k}_status = 'failed', {k}_attempts = {k}_attempts + 1, "
            f"{k}_retry_at = {retry_at}, {_RELEASED.format(k=k)} "
            f"where id = :id and {k}_claim = :token",
            params,
        )

    async def hand_back(self, claim: JobClaim) -> None:
        k = claim.kind
        await self._runner.write(
            f"update sessions set {k}_status = 'pending', {_RELEASED.format(k=k)} "
            f"where id = :id and {k}_claim = :token",
            {"id": claim.session_id, "token": claim.token},
        )

    async def reclaim(self, claimant: str) -> int:
        handed_back = 0
        for k in ("summary", "title"):
            handed_back += await self._runner.write(
                f"update sessions set {k}_status = 'pending', {_RELEASED.format(k=k)} "
                f"where {k}_claimed_by = :claimant and {k}_status = 'running'",
                {"claimant": claimant},
            )
        return handed_back
