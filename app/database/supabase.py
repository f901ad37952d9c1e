"""The Supabase store: the same tables over REST (PostgREST), with the official `postgrest` client.

One client for the process, on our own `httpx.AsyncClient` (timeouts, HTTP/1.1). REST has no
multi-statement transactions, so what the PostgreSQL store does in one transaction the schema does
by itself: the `session_events` trigger of schema version 2 keeps `event_count` and `updated_at`
(see docs/stores.md). `postgrest` and `httpx` types and errors stay in this module.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from postgrest import APIError, AsyncPostgrestClient
from postgrest.types import ReturnMethod
from pydantic import JsonValue

from app.database.base import EventRow, LeaseState, SessionCursor, SessionRecord, StoreError
from app.database.migrations import latest_version, pending
from app.protocol import StoredEvent, SummaryStatus, stored_event_adapter

# PostgREST answers at most 1000 rows per request by default; one insert is one transaction,
# and a few hundred rows keep a request well inside the gateway's body and time limits.
PAGE_ROWS = 1000
INSERT_ROWS = 500
_SESSION_COLUMNS = (
    "id,owner,created_at,updated_at,model,title,summary,summary_status,summary_seq,"
    "event_count,context_summary,context_summary_seq"
)
# PostgREST's own codes for "cannot reach the database" (connection, pool timeout, ...).
_RETRYABLE_PGRST = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})
_RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})
_RETRYABLE_HTTP = frozenset({"408", "429", "500", "502", "503", "504", "520"})
_KEY_REFUSED = frozenset({"401", "PGRST301", "PGRST302", "PGRST303"})
_NO_TABLE = frozenset({"42P01", "PGRST205", "404"})
_NOT_ALLOWED = frozenset({"42501", "403"})

Row = dict[str, Any]


def _rows(data: object) -> list[Row]:
    """PostgREST answers a JSON array of row objects (empty with `return=minimal`)."""
    if not isinstance(data, list):
        return []
    return [dict(row) for row in data if isinstance(row, dict)]


def _is_retryable(code: str) -> bool:
    if code in _RETRYABLE_PGRST or code in _RETRYABLE_HTTP:
        return True
    return len(code) == 5 and code[:2] in _RETRYABLE_SQLSTATE_CLASSES


def _translate(error: Exception, doing: str) -> StoreError:
    if isinstance(error, APIError):
        code = str(error.code or "")
        return StoreError(f"{doing}: {error.message} ({code})", retryable=_is_retryable(code))
    # httpx: timeouts, refused or dropped connections. Trying again may work.
    return StoreError(f"{doing}: {error!r}", retryable=True)


def _as_uuid(session_id: str) -> str | None:
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        return None


def _timestamp(moment: datetime) -> str:
    return moment.isoformat()


def _session_row(record: SessionRecord, session_id: str) -> Row:
    return {
        "id": session_id,
        "owner": record.owner,
        "created_at": _timestamp(record.created_at),
        "updated_at": _timestamp(record.updated_at),
        "model": record.model,
        "title": record.title,
        "summary": record.summary,
        "summary_status": record.summary_status.value,
        "summary_seq": record.summary_seq,
        "event_count": record.event_count,
        "context_summary": record.context_summary,
        "context_summary_seq": record.context_summary_seq,
    }


def _session_from_row(row: Row) -> SessionRecord:
    return SessionRecord(
        id=str(row["id"]),
        owner=row["owner"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        model=row["model"],
        title=row["title"],
        summary=row["summary"],
        summary_status=SummaryStatus(row["summary_status"]),
        summary_seq=row["summary_seq"],
        event_count=row["event_count"],
        context_summary=row["context_summary"],
        context_summary_seq=row["context_summary_seq"],
    )


def _event_row(row: EventRow) -> Row:
    session_id = _as_uuid(row.session_id)
    if session_id is None:
        raise StoreError(f"cannot store events of session {row.session_id!r}", retryable=False)
    event = row.event
    return {
        "session_id": session_id,
        "seq": event.seq,
        "type": event.type,
        "message_id": event.id if event.type == "user.message" else None,
        "created_at": _timestamp(event.created_at),
        "data": orjson.loads(stored_event_adapter.dump_json(event)),
    }


def _moment(plus_s: float = 0.0) -> str:
    """This instance's time `plus_s` from now, as a timestamp for a row or a filter."""
    return _timestamp(datetime.now(UTC) + timedelta(seconds=plus_s))


def _quoted(value: str) -> str:
    # Inside or=(...) a value with reserved characters (`,.:()`) must be double-quoted.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SupabaseStore:
    """`Store` on a Supabase project's REST API, with the service role (secret) key."""

    kind = "supabase"

    def __init__(self, url: str, key: str, *, timeout_s: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self._key = key
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncPostgrestClient | None = None

    @property
    def client(self) -> AsyncPostgrestClient:
        if self._client is None:
            raise StoreError("the Supabase store is not open", retryable=False)
        return self._client

    async def open(self) -> None:
        # HTTP/2 off: long-lived HTTP/2 connections to the gateway end in frequent
        # "Server disconnected" errors; HTTP/1.1 keep-alive is as fast for small requests.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout_s), http2=False)
        self._client = AsyncPostgrestClient(
            f"{self._url}/rest/v1",
            headers={"apikey": self._key, "Authorization": f"Bearer {self._key}"},
            http_client=self._http,
            # The client would sleep seconds between GET retries; our writer and callers decide.
            retry_enabled=False,
        )
        try:
            await self._check_schema()
        except BaseException:
            await self.close()
            raise

    async def _check_schema(self) -> None:
        """Stop the start, naming the setting, when the URL, the key or the schema is wrong."""
        try:
            answer = await (
                self.client.from_("schema_version")
                .select("version")
                .order("version", desc=True)
                .limit(1)
                .execute()
            )
        except httpx.HTTPError as e:
            raise StoreError(
                f"cannot reach SUPABASE_URL {self._url}: {e!r}", retryable=False
            ) from e
        except APIError as e:
            raise self._start_error(e) from e
        rows = _rows(answer.data)
        current = int(rows[0]["version"]) if rows else 0
        if current < latest_version("postgres"):
            raise StoreError(
                f"the Supabase database schema is at version {current}, this app needs "
                f"{latest_version('postgres')}: run schema.sql, then supabase/policies.sql, in the "
                "project's SQL editor (both upgrade in place)",
                retryable=False,
            )
        pending("postgres", current)  # refuses a schema newer than this app

    def _start_error(self, error: APIError) -> StoreError:
        code = str(error.code or "")
        if code in _KEY_REFUSED or "api key" in str(error.message or "").lower():
            reason = "SUPABASE_KEY was refused (use the project's service role / secret key)"
        elif code in _NO_TABLE:
            reason = (
                f"SUPABASE_URL {self._url} has no `schema_version` table: run schema.sql, then "
                "supabase/policies.sql, in the project's SQL editor"
            )
        elif code in _NOT_ALLOWED:
            reason = "SUPABASE_KEY may not read the tables: use the service role / secret key"
        else:
            reason = f"SUPABASE_URL {self._url} answered an error"
        return StoreError(f"{reason}: {error.message} ({code})", retryable=False)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._http = None
        self._client = None

    async def _run(self, query: Any, doing: str) -> list[Row]:
        """Execute a built query; the rows it answered (none with `return=minimal`)."""
        try:
            answer = await query.execute()
        except (APIError, httpx.HTTPError) as e:
            raise _translate(e, doing) from e
        return _rows(answer.data)

    async def ping(self) -> None:
        table = self.client.from_("schema_version")
        await self._run(table.select("version").limit(1), "Supabase does not answer")

    async def create_session(self, record: SessionRecord) -> None:
        session_id = _as_uuid(record.id)
        if session_id is None:
            raise StoreError(f"a session id must be a UUID, not {record.id!r}", retryable=False)
        row = _session_row(record, session_id)
        query = self.client.from_("sessions").insert(row, returning=ReturnMethod.minimal)
        await self._run(query, "cannot create the session")

    async def get_session(self, session_id: str) -> SessionRecord | None:
        key = _as_uuid(session_id)
        if key is None:
            return None
        query = self.client.from_("sessions").select(_SESSION_COLUMNS).eq("id", key).limit(1)
        rows = await self._run(query, "cannot read the session")
        return _session_from_row(rows[0]) if rows else None

    async def list_sessions(
        self, *, limit: int, before: SessionCursor | None, owner: str | None
    ) -> list[SessionRecord]:
        query = self.client.from_("sessions").select(_SESSION_COLUMNS)
        if owner is not None:
            query = query.eq("owner", owner)
        if before is not None:
            cursor_id = _as_uuid(before.id)
            if cursor_id is None:
                return []
            moment = _quoted(_timestamp(before.created_at))
            query = query.or_(
                f"created_at.lt.{moment},and(created_at.eq.{moment},id.lt.{cursor_id})"
            )
        query = query.order("created_at", desc=True).order("id", desc=True).limit(limit)
        return [_session_from_row(row) for row in await self._run(query, "cannot list sessions")]

    async def delete_session(self, session_id: str) -> bool:
        key = _as_uuid(session_id)
        if key is None:
            return False
        query = (
            self.client.from_("sessions")
            .delete(returning=ReturnMethod.representation)
            .select("id")
            .eq("id", key)
        )
        return bool(await self._run(query, "cannot delete the session"))

    async def append_events(self, rows: Sequence[EventRow]) -> None:
        body = [_event_row(row) for row in rows]
        # One request is one transaction; a batch larger than INSERT_ROWS is several, each
        # idempotent, so a retry after a partial failure completes it without duplicates.
        for start in range(0, len(body), INSERT_ROWS):
            query = self.client.from_("session_events").upsert(
                body[start : start + INSERT_ROWS],
                on_conflict="session_id,seq",
                ignore_duplicates=True,
                returning=ReturnMethod.minimal,
            )
            await self._run(query, "cannot store events")

    async def list_events(
        self, session_id: str, *, after_seq: int, limit: int | None
    ) -> list[StoredEvent]:
        key = _as_uuid(session_id)
        if key is None:
            return []
        events: list[StoredEvent] = []
        while limit is None or len(events) < limit:
            want = PAGE_ROWS if limit is None else min(PAGE_ROWS, limit - len(events))
            query = (
                self.client.from_("session_events")
                .select("seq,data")
                .eq("session_id", key)
                .gt("seq", after_seq)
                .order("seq")
                .limit(want)
            )
            rows = await self._run(query, "cannot read events")
            events += [stored_event_adapter.validate_python(row["data"]) for row in rows]
            if len(rows) < want:
                break
            after_seq = int(rows[-1]["seq"])  # the next page starts after the last seq seen
        return events

    async def last_seq(self, session_id: str) -> int:
        key = _as_uuid(session_id)
        if key is None:
            return 0
        query = (
            self.client.from_("session_events")
            .select("seq")
            .eq("session_id", key)
            .order("seq", desc=True)
            .limit(1)
        )
        rows = await self._run(query, "cannot read the last seq")
        return int(rows[0]["seq"]) if rows else 0

    async def find_user_message(self, session_id: str, message_id: str) -> StoredEvent | None:
        key = _as_uuid(session_id)
        if key is None:
            return None
        query = (
            self.client.from_("session_events")
            .select("data")
            .eq("session_id", key)
            .eq("message_id", message_id)
            .limit(1)
        )
        rows = await self._run(query, "cannot find the message")
        return stored_event_adapter.validate_python(rows[0]["data"]) if rows else None

    async def set_summary_status(self, session_id: str, status: SummaryStatus) -> None:
        await self._update_session(session_id, {"summary_status": status.value})

    async def save_summary(self, session_id: str, *, summary: str, summary_seq: int) -> None:
        values = {"summary": summary, "summary_seq": summary_seq, "summary_status": "done"}
        await self._update_session(session_id, values)

    async def set_title(self, session_id: str, title: str) -> None:
        await self._update_session(session_id, {"title": title, "title_status": "done"})

    async def save_context_summary(self, session_id: str, *, summary: str, upto_seq: int) -> None:
        values = {"context_summary": summary, "context_summary_seq": upto_seq}
        await self._update_session(session_id, values)

    async def _update_session(self, session_id: str, values: Row) -> None:
        key = _as_uuid(session_id)
        if key is None:
            return
        table = self.client.from_("sessions")
        query = table.update(values, returning=ReturnMethod.minimal).eq("id", key)
        await self._run(query, "cannot update the session")

    async def sessions_with_summary_status(self, statuses: Sequence[SummaryStatus]) -> list[str]:
        return await self._session_ids(statuses, behind_only=False)

    async def sessions_with_unsummarized_events(self) -> list[str]:
        behind = await self._session_ids([SummaryStatus.NONE, SummaryStatus.DONE], behind_only=True)
        # A filter cannot say "no live lease": drop the leased ones in a second request per page.
        leased: set[str] = set()
        for start in range(0, len(behind), PAGE_ROWS // 10):
            page = behind[start : start + PAGE_ROWS // 10]
            query = (
                self.client.from_("session_leases")
                .select("session_id")
                .in_("session_id", page)
                .gt("expires_at", _moment())
                .limit(len(page))
            )
            rows = await self._run(query, "cannot read leases")
            leased |= {str(row["session_id"]) for row in rows}
        return [session_id for session_id in behind if session_id not in leased]

    # Leases and claims: PostgREST runs one statement per request, so each step is a conditional
    # insert or PATCH whose filter is the condition; rows come back only when it held. Expiry is
    # judged by this instance's clock (instances must keep NTP time; see docs/deployment.md).

    async def acquire_lease(
        self, session_id: str, *, holder: str, ttl_s: float
    ) -> LeaseState | None:
        key = _as_uuid(session_id)
        if key is None:
            raise StoreError(f"no lease for session {session_id!r}", retryable=False)
        lease = {"session_id": key, "holder": holder, "state": "live", "expires_at": _moment(ttl_s)}
        table = self.client.from_("session_leases")
        inserted = table.upsert(
            lease,
            on_conflict="session_id",
            ignore_duplicates=True,
            returning=ReturnMethod.representation,
        )
        if await self._run(inserted, "cannot take the session's lease"):
            return None
        taken_over = (
            table.update(lease, returning=ReturnMethod.representation)
            .eq("session_id", key)
            .or_(f"expires_at.lte.{_quoted(_moment())},holder.eq.{_quoted(holder)}")
        )
        if await self._run(taken_over, "cannot take the session's lease"):
            return None
        query = table.select("state").eq("session_id", key).limit(1)
        rows = await self._run(query, "cannot read the session's lease")
        return LeaseState(rows[0]["state"]) if rows else LeaseState.CLOSING

    async def mark_lease_closing(self, session_id: str, *, holder: str) -> None:
        key = _as_uuid(session_id)
        if key is None:
            return
        table = self.client.from_("session_leases")
        query = (
            table.update({"state": "closing"}, returning=ReturnMethod.minimal)
            .eq("session_id", key)
            .eq("holder", holder)
        )
        await self._run(query, "cannot update the session's lease")

    async def release_lease(self, session_id: str, *, holder: str) -> None:
        key = _as_uuid(session_id)
        if key is None:
            return
        table = self.client.from_("session_leases")
        query = table.delete(returning=ReturnMethod.minimal).eq("session_id", key)
        await self._run(query.eq("holder", holder), "cannot release the session's lease")

    async def renew_leases(
        self, session_ids: Sequence[str], *, holder: str, ttl_s: float
    ) -> set[str]:
        keys = [key for key in map(_as_uuid, session_ids) if key is not None]
        if not keys:
            return set()
        table = self.client.from_("session_leases")
        query = (
            table.update({"expires_at": _moment(ttl_s)}, returning=ReturnMethod.representation)
            .eq("holder", holder)
            .in_("session_id", keys)
        )
        rows = await self._run(query, "cannot renew leases")
        return {str(row["session_id"]) for row in rows}

    async def claim_summary(self, session_id: str, *, stale_after_s: float) -> bool:
        stale = _quoted(_moment(-stale_after_s))
        return await self._claim(
            session_id,
            {"summary_status": "running", "summary_claimed_at": _moment()},
            f"summary_status.eq.pending,and(summary_status.eq.running,"
            f"or(summary_claimed_at.is.null,summary_claimed_at.lt.{stale}))",
        )

    async def claim_title(self, session_id: str, *, stale_after_s: float) -> bool:
        stale = _quoted(_moment(-stale_after_s))
        return await self._claim(
            session_id,
            {"title_status": "running", "title_claimed_at": _moment()},
            f"title_status.in.(none,pending),and(title_status.eq.running,"
            f"or(title_claimed_at.is.null,title_claimed_at.lt.{stale}))",
            title_unset=True,
        )

    async def _claim(
        self, session_id: str, values: Row, condition: str, *, title_unset: bool = False
    ) -> bool:
        key = _as_uuid(session_id)
        if key is None:
            return False
        query = (
            self.client.from_("sessions")
            .update(values, returning=ReturnMethod.representation)
            .eq("id", key)
            .or_(condition)
        )
        if title_unset:
            query = query.is_("title", "null")
        return bool(await self._run(query, "cannot claim the job"))

    async def sessions_with_stale_titles(self, *, stale_after_s: float) -> list[str]:
        stale = _quoted(_moment(-stale_after_s))
        query = (
            self.client.from_("sessions")
            .select("id")
            .is_("title", "null")
            .or_(
                f"title_status.eq.pending,and(title_status.eq.running,"
                f"or(title_claimed_at.is.null,title_claimed_at.lt.{stale}))"
            )
            .order("updated_at")
            .limit(PAGE_ROWS)
        )
        rows = await self._run(query, "cannot list titles to do")
        return [str(row["id"]) for row in rows]

    async def _session_ids(
        self, statuses: Sequence[SummaryStatus], *, behind_only: bool
    ) -> list[str]:
        """Ids of sessions in these summary states, oldest update first, page after page."""
        found: list[str] = []
        while True:
            query = (
                self.client.from_("sessions")
                .select("id")
                .in_("summary_status", [status.value for status in statuses])
            )
            if behind_only:
                query = query.is_("summary_behind", "true")
            query = (
                query.order("updated_at").order("id").range(len(found), len(found) + PAGE_ROWS - 1)
            )
            rows = await self._run(query, "cannot list sessions to summarize")
            found += [str(row["id"]) for row in rows]
            if len(rows) < PAGE_ROWS:
                return found

    async def upsert_user_profiles(self, profiles: dict[str, dict[str, JsonValue]]) -> None:
        rows = [{"user_id": user_id, "profile": profile} for user_id, profile in profiles.items()]
        query = self.client.from_("user_profiles").upsert(
            rows, on_conflict="user_id", returning=ReturnMethod.minimal
        )
        await self._run(query, "cannot store user profiles")

    async def get_user_profile(self, user_id: str) -> dict[str, JsonValue] | None:
        query = self.client.from_("user_profiles").select("profile").eq("user_id", user_id).limit(1)
        rows = await self._run(query, "cannot read the user profile")
        if not rows:
            return None
        profile: dict[str, JsonValue] = rows[0]["profile"]
        return profile
