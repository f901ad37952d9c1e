"""Summary and title job claims over REST: each step is one conditional PATCH whose filter is
the condition (rows come back only when it held), as in the SQL stores."""

from __future__ import annotations

import uuid
from typing import Any

from postgrest.types import ReturnMethod

from app.database.base import JobClaim, JobKind
from app.database.supabase.rest import PAGE_ROWS, RestClient, Row, as_uuid, moment, quoted


def _due(kind: JobKind, stale_after_s: float) -> str:
    """The `or=(...)` condition of a due job (pending, failed with a retry due, or claimed by an
    instance that did not finish within `stale_after_s`)."""
    now, stale = quoted(moment()), quoted(moment(-stale_after_s))
    waiting = "title_status.in.(none,pending)" if kind == "title" else "summary_status.eq.pending"
    return (
        f"{waiting},and({kind}_status.eq.failed,{kind}_retry_at.lte.{now}),"
        f"and({kind}_status.eq.running,or({kind}_claimed_at.is.null,{kind}_claimed_at.lt.{stale}))"
    )


def _released(kind: JobKind) -> Row:
    return {f"{kind}_claim": None, f"{kind}_claimed_by": None}


class RestJobs:
    """`JobClaims` over REST."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    def _sessions(self) -> Any:
        return self._rest.table("sessions")

    async def request_summary(self, session_id: str) -> None:
        key = as_uuid(session_id)
        if key is None:
            return
        values = {"summary_status": "pending", "summary_attempts": 0, "summary_retry_at": None}
        query = self._sessions().update(
            values | _released("summary"), returning=ReturnMethod.minimal
        )
        await self._rest.run(query.eq("id", key), "cannot request the summary")

    async def summaries_due(self, *, stale_after_s: float) -> list[str]:
        query = self._sessions().select("id").or_(_due("summary", stale_after_s))
        return await self._ids(query)

    async def titles_due(self, *, stale_after_s: float) -> list[str]:
        query = (
            self._sessions()
            .select("id")
            .is_("title", "null")
            .neq("title_status", "none")
            .or_(_due("title", stale_after_s))
        )
        return await self._ids(query)

    async def unsummarized_sessions(self) -> list[str]:
        query = (
            self._sessions()
            .select("id")
            .in_("summary_status", ["none", "done"])
            .is_("summary_behind", "true")
        )
        behind = await self._ids(query)
        # A filter cannot say "no live lease": drop the leased ones with a second request.
        leased: set[str] = set()
        for start in range(0, len(behind), 100):
            ids = behind[start : start + 100]
            rows = await self._rest.run(
                self._rest.table("session_leases")
                .select("session_id")
                .in_("session_id", ids)
                .neq("state", "free")
                .gt("expires_at", moment())
                .limit(len(ids)),
                "cannot read leases",
            )
            leased |= {str(row["session_id"]) for row in rows}
        return [session_id for session_id in behind if session_id not in leased]

    async def _ids(self, query: Any) -> list[str]:
        rows = await self._rest.run(
            query.order("updated_at").limit(PAGE_ROWS), "cannot list jobs to do"
        )
        return [str(row["id"]) for row in rows]

    async def claim(
        self, session_id: str, kind: JobKind, *, claimant: str, stale_after_s: float
    ) -> JobClaim | None:
        key = as_uuid(session_id)
        if key is None:
            return None
        token = uuid.uuid4().hex
        values = {
            f"{kind}_status": "running",
            f"{kind}_claimed_at": moment(),
            f"{kind}_claim": token,
            f"{kind}_claimed_by": claimant,
        }
        query = (
            self._sessions()
            .update(values, returning=ReturnMethod.representation)
            .eq("id", key)
            .or_(_due(kind, stale_after_s))
        )
        if kind == "title":
            query = query.is_("title", "null")
        rows = await self._rest.run(query, "cannot claim the job")
        return JobClaim(key, kind, token, int(rows[0][f"{kind}_attempts"])) if rows else None

    async def finish_summary(self, claim: JobClaim, *, summary: str, upto_seq: int) -> bool:
        values = {
            "summary": summary,
            "summary_seq": upto_seq,
            "summary_status": "done",
            "summary_attempts": 0,
            "summary_retry_at": None,
        }
        query = self._claimed(claim, values | _released("summary")).lte("summary_seq", upto_seq)
        return bool(await self._rest.run(query, "cannot store the summary"))

    async def finish_title(self, claim: JobClaim, title: str) -> bool:
        values = {
            "title": title,
            "title_status": "done",
            "title_attempts": 0,
            "title_retry_at": None,
        }
        query = self._claimed(claim, values | _released("title"))
        return bool(await self._rest.run(query, "cannot store the title"))

    async def fail(self, claim: JobClaim, *, retry_in_s: float | None) -> None:
        k = claim.kind
        values = {
            f"{k}_status": "failed",
            # The claim filter makes this ours alone: no other instance changes the count now.
            f"{k}_attempts": claim.attempts + 1,
            f"{k}_retry_at": None if retry_in_s is None else moment(retry_in_s),
        }
        await self._rest.run(self._claimed(claim, values | _released(k)), "cannot fail the job")

    async def hand_back(self, claim: JobClaim) -> None:
        values = {f"{claim.kind}_status": "pending"} | _released(claim.kind)
        await self._rest.run(self._claimed(claim, values), "cannot hand the job back")

    def _claimed(self, claim: JobClaim, values: Row) -> Any:
        """An update of the job's columns that applies only while `claim` stands."""
        return (
            self._sessions()
            .update(values, returning=ReturnMethod.representation)
            .select("id")
            .eq("id", claim.session_id)
            .eq(f"{claim.kind}_claim", claim.token)
        )

    async def reclaim(self, claimant: str) -> int:
        handed_back = 0
        kinds: tuple[JobKind, ...] = ("summary", "title")
        for k in kinds:
            query = (
                self._sessions()
                .update(
                    {f"{k}_status": "pending"} | _released(k), returning=ReturnMethod.representation
                )
                .select("id")
                .eq(f"{k}_claimed_by", claimant)
                .eq(f"{k}_status", "running")
            )
            handed_back += len(
                await self._rest.run(query, "cannot hand back a dead instance's jobs")
            )
        return handed_back
