"""The PostgreSQL store: asyncpg and a pool (plain PostgreSQL, Supabase direct or pooler).

asyncpg types and errors stay in this module: every failure leaves as a `StoreError`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from pydantic import JsonValue

from app.database.base import EventRow, LeaseState, SessionCursor, SessionRecord, StoreError
from app.database.migrations import pending
from app.protocol import StoredEvent, SummaryStatus, stored_event_adapter

# Supavisor's transaction mode: a connection is shared between clients from one transaction to the
# next, so a statement prepared on it may be gone (or someone else's) by the next call.
TRANSACTION_POOLER_PORT = 6543
# Any constant works; it only has to be the same in every process migrating one database.
_MIGRATION_LOCK_KEY = 0x5E55_10_17
# SQLSTATE classes worth trying again: connection exceptions, transaction rollbacks (serialization,
# deadlock), insufficient resources (too many connections), operator intervention (shutdown).
_RETRYABLE_CLASSES = frozenset({"08", "40", "53", "57"})

_SESSION_COLUMNS = (
    "id, owner, created_at, updated_at, model, title, summary, summary_status, summary_seq, "
    "event_count, context_summary, context_summary_seq"
)
_EVENT_COLUMNS = ("session_id", "seq", "type", "message_id", "created_at", "data")
_INSERT_EVENT = (
    "insert into session_events (session_id, seq, type, message_id, created_at, data) "
    "values ($1, $2, $3, $4, $5, $6::jsonb) on conflict (session_id, seq) do nothing"
)
# Free, expired or already ours: the lease is taken (a row comes back); else nothing comes back.
_ACQUIRE_LEASE = (
    "insert into session_leases (session_id, holder, state, expires_at) "
    "values ($1, $2, 'live', now() + make_interval(secs => $3)) "
    "on conflict (session_id) do update set holder = excluded.holder, state = 'live', "
    "expires_at = excluded.expires_at "
    "where session_leases.expires_at <= now() or session_leases.holder = excluded.holder "
    "returning holder"
)
# Below this many rows a batch goes in with executemany (one round trip, no scratch table: the
# latency of a user message's commit); from here on COPY (throughput of long answers and tools).
COPY_FROM_ROWS = 32

EventRecord = tuple[uuid.UUID, int, str, str | None, datetime, str]


def redact(dsn: str) -> str:
    """The URL without its password, fit for a log line or an error message."""
    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable URL>"


def uses_statement_cache(dsn: str, *, wanted: bool) -> bool:
    """False behind the transaction-mode pooler (port 6543) or when the setting turns it off."""
    try:
        port = urlsplit(dsn).port
    except ValueError:
        port = None
    return wanted and port != TRANSACTION_POOLER_PORT


def _as_uuid(session_id: str) -> uuid.UUID | None:
    # Ids come from clients (URLs, resumes): a malformed one names no session, it is no error.
    try:
        return uuid.UUID(session_id)
    except ValueError:
        return None


def _translate(error: Exception, doing: str) -> StoreError:
    if isinstance(error, asyncpg.PostgresError):
        state = str(error.sqlstate or "")
        return StoreError(f"{doing}: {error} ({state})", retryable=state[:2] in _RETRYABLE_CLASSES)
    # Lost or refused connections, timeouts, a closed pool: the next attempt may well work.
    return StoreError(f"{doing}: {error!r}", retryable=True)


_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _session_from_row(row: asyncpg.Record) -> SessionRecord:
    return SessionRecord(
        id=str(row["id"]),
        owner=row["owner"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        model=row["model"],
        title=row["title"],
        summary=row["summary"],
        summary_status=SummaryStatus(row["summary_status"]),
        summary_seq=row["summary_seq"],
        event_count=row["event_count"],
        context_summary=row["context_summary"],
        context_summary_seq=row["context_summary_seq"],
    )


def _event_record(row: EventRow) -> EventRecord:
    session_id = _as_uuid(row.session_id)
    if session_id is None:
        raise StoreError(f"cannot store events of session {row.session_id!r}", retryable=False)
    event = row.event
    message_id = event.id if event.type == "user.message" else None
    data = stored_event_adapter.dump_json(event).decode()
    return (session_id, event.seq, event.type, message_id, event.created_at, data)


def _event_from_data(data: str) -> StoredEvent:
    return stored_event_adapter.validate_json(data)


class PostgresStore:
    """`Store` on PostgreSQL through an asyncpg pool; the schema is migrated at `open()`."""

    kind = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        statement_cache: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._statement_cache = uses_statement_cache(dsn, wanted=statement_cache)
        self._timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None

    @property
    def statement_cache(self) -> bool:
        """Whether prepared statements are cached per connection."""
        return self._statement_cache

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._pool_min,
                max_size=self._pool_max,
                timeout=self._timeout_s,
                command_timeout=self._timeout_s,
                statement_cache_size=100 if self._statement_cache else 0,
            )
        except (*_DRIVER_ERRORS, ValueError) as e:
            raise StoreError(
                f"cannot connect to DATABASE_URL {redact(self._dsn)}: {e}", retryable=False
            ) from e
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        async with self._connection("cannot migrate the schema") as conn, conn.transaction():
            # Several processes may start at once: one migrates, the others then find it done.
            await conn.execute("select pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
            await conn.execute(
                "create table if not exists schema_version (version integer not null, "
                "applied_at timestamptz not null default now())"
            )
            current = await conn.fetchval("select coalesce(max(version), 0) from schema_version")
            for step in pending("postgres", int(current)):
                await conn.execute(step.sql)
                await conn.execute("insert into schema_version (version) values ($1)", step.version)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def _connection(self, doing: str) -> AsyncIterator[Any]:
        """A pooled connection; driver errors inside become `StoreError`s."""
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open", retryable=False)
        try:
            async with self._pool.acquire(timeout=self._timeout_s) as conn:
                yield conn
        except _DRIVER_ERRORS as e:
            raise _translate(e, doing) from e

    async def ping(self) -> None:
        async with self._connection("PostgreSQL does not answer") as conn:
            await conn.fetchval("select 1")

    async def create_session(self, record: SessionRecord) -> None:
        session_id = _as_uuid(record.id)
        if session_id is None:
            raise StoreError(f"a session id must be a UUID, not {record.id!r}", retryable=False)
        async with self._connection("cannot create the session") as conn:
            await conn.execute(
                f"insert into sessions ({_SESSION_COLUMNS}) "
                "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                session_id,
                record.owner,
                record.created_at,
                record.updated_at,
                record.model,
                record.title,
                record.summary,
                record.summary_status.value,
                record.summary_seq,
                record.event_count,
                record.context_summary,
                record.context_summary_seq,
            )

    async def get_session(self, session_id: str) -> SessionRecord | None:
        key = _as_uuid(session_id)
        if key is None:
            return None
        async with self._connection("cannot read the session") as conn:
            row = await conn.fetchrow(f"select {_SESSION_COLUMNS} from sessions where id = $1", key)
        return None if row is None else _session_from_row(row)

    async def list_sessions(
        self, *, limit: int, before: SessionCursor | None, owner: str | None
    ) -> list[SessionRecord]:
        clauses: list[str] = []
        params: list[object] = []
        if owner is not None:
            params.append(owner)
            clauses.append(f"owner = ${len(params)}")
        if before is not None:
            cursor_id = _as_uuid(before.id)
            if cursor_id is None:
                return []
            params += [before.created_at, cursor_id]
            clauses.append(f"(created_at, id) < (${len(params) - 1}, ${len(params)})")
        where = f"where {' and '.join(clauses)}" if clauses else ""
        params.append(limit)
        async with self._connection("cannot list sessions") as conn:
            rows = await conn.fetch(
                f"select {_SESSION_COLUMNS} from sessions {where} "
                f"order by created_at desc, id desc limit ${len(params)}",
                *params,
            )
        return [_session_from_row(row) for row in rows]

    async def delete_session(self, session_id: str) -> bool:
        key = _as_uuid(session_id)
        if key is None:
            return False
        async with self._connection("cannot delete the session") as conn:
            status: str = await conn.execute("delete from sessions where id = $1", key)
        return status != "DELETE 0"

    async def append_events(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        records = [_event_record(row) for row in rows]
        async with self._connection("cannot store events") as conn, conn.transaction():
            if len(records) < COPY_FROM_ROWS:
                await conn.executemany(_INSERT_EVENT, records)
            else:
                await self._copy_events(conn, records)

    @staticmethod
    async def _copy_events(conn: Any, records: list[EventRecord]) -> None:
        # COPY is the fastest way in but cannot skip duplicates: copy into a scratch table, then
        # one INSERT ... ON CONFLICT DO NOTHING, so the schema's trigger runs once per batch.
        columns = ", ".join(_EVENT_COLUMNS)
        await conn.execute(
            "create temp table events_in (like session_events including defaults) on commit drop"
        )
        await conn.copy_records_to_table("events_in", records=records, columns=_EVENT_COLUMNS)
        await conn.execute(
            f"insert into session_events ({columns}) select {columns} from events_in "
            "on conflict (session_id, seq) do nothing"
        )

    async def list_events(
        self, session_id: str, *, after_seq: int, limit: int | None
    ) -> list[StoredEvent]:
        key = _as_uuid(session_id)
        if key is None:
            return []
        async with self._connection("cannot read events") as conn:
            rows = await conn.fetch(
                "select data::text from session_events where session_id = $1 and seq > $2 "
                "order by seq limit $3",
                key,
                after_seq,
                limit,
            )
        return [_event_from_data(row[0]) for row in rows]

    async def last_seq(self, session_id: str) -> int:
        key = _as_uuid(session_id)
        if key is None:
            return 0
        async with self._connection("cannot read the last seq") as conn:
            value = await conn.fetchval(
                "select coalesce(max(seq), 0) from session_events where session_id = $1", key
            )
        return int(value)

    async def find_user_message(self, session_id: str, message_id: str) -> StoredEvent | None:
        key = _as_uuid(session_id)
        if key is None:
            return None
        async with self._connection("cannot find the message") as conn:
            data = await conn.fetchval(
                "select data::text from session_events where session_id = $1 and message_id = $2",
                key,
                message_id,
            )
        return None if data is None else _event_from_data(data)

    async def set_summary_status(self, session_id: str, status: SummaryStatus) -> None:
        await self._update_session(session_id, "summary_status = $2", status.value)

    async def save_summary(self, session_id: str, *, summary: str, summary_seq: int) -> None:
        await self._update_session(
            session_id,
            "summary = $2, summary_seq = $3, summary_status = 'done'",
            summary,
            summary_seq,
        )

    async def set_title(self, session_id: str, title: str) -> None:
        await self._update_session(session_id, "title = $2, title_status = 'done'", title)

    async def save_context_summary(self, session_id: str, *, summary: str, upto_seq: int) -> None:
        await self._update_session(
            session_id, "context_summary = $2, context_summary_seq = $3", summary, upto_seq
        )

    async def _update_session(self, session_id: str, assignments: str, *values: object) -> None:
        key = _as_uuid(session_id)
        if key is None:
            return
        async with self._connection("cannot update the session") as conn:
            await conn.execute(f"update sessions set {assignments} where id = $1", key, *values)

    async def sessions_with_summary_status(self, statuses: Sequence[SummaryStatus]) -> list[str]:
        async with self._connection("cannot list summaries to do") as conn:
            rows = await conn.fetch(
                "select id from sessions where summary_status = any($1::text[]) "
                "order by updated_at",
                [status.value for status in statuses],
            )
        return [str(row["id"]) for row in rows]

    async def sessions_with_unsummarized_events(self) -> list[str]:
        async with self._connection("cannot list sessions to summarize") as conn:
            rows = await conn.fetch(
                "select id from sessions s where summary_behind "
                "and summary_status in ('none', 'done') and not exists (select 1 from "
                "session_leases l where l.session_id = s.id and l.expires_at > now()) "
                "order by updated_at"
            )
        return [str(row["id"]) for row in rows]

    async def acquire_lease(
        self, session_id: str, *, holder: str, ttl_s: float
    ) -> LeaseState | None:
        key = _as_uuid(session_id)
        if key is None:
            raise StoreError(f"no lease for session {session_id!r}", retryable=False)
        async with self._connection("cannot take the session's lease") as conn:
            # The database's clock decides expiry, so instances need not agree on the time.
            taken = await conn.fetchval(_ACQUIRE_LEASE, key, holder, ttl_s)
            if taken is not None:
                return None
            state = await conn.fetchval(
                "select state from session_leases where session_id = $1", key
            )
        # Released between the two statements: report it as finishing, so the caller asks again.
        return LeaseState.CLOSING if state is None else LeaseState(state)

    async def mark_lease_closing(self, session_id: str, *, holder: str) -> None:
        await self._lease_statement(
            "update session_leases set state = 'closing' where session_id = $1 and holder = $2",
            session_id,
            holder,
        )

    async def release_lease(self, session_id: str, *, holder: str) -> None:
        await self._lease_statement(
            "delete from session_leases where session_id = $1 and holder = $2", session_id, holder
        )

    async def _lease_statement(self, sql: str, session_id: str, holder: str) -> None:
        key = _as_uuid(session_id)
        if key is None:
            return
        async with self._connection("cannot update the session's lease") as conn:
            await conn.execute(sql, key, holder)

    async def renew_leases(
        self, session_ids: Sequence[str], *, holder: str, ttl_s: float
    ) -> set[str]:
        keys = [key for key in map(_as_uuid, session_ids) if key is not None]
        if not keys:
            return set()
        async with self._connection("cannot renew leases") as conn:
            rows = await conn.fetch(
                "update session_leases set expires_at = now() + make_interval(secs => $3) "
                "where holder = $1 and session_id = any($2::uuid[]) returning session_id",
                holder,
                keys,
                ttl_s,
            )
        return {str(row["session_id"]) for row in rows}

    async def claim_summary(self, session_id: str, *, stale_after_s: float) -> bool:
        return await self._claim(
            session_id,
            "update sessions set summary_status = 'running', summary_claimed_at = now() "
            "where id = $1 and (summary_status = 'pending' or (summary_status = 'running' and "
            "coalesce(summary_claimed_at, '-infinity') < now() - make_interval(secs => $2))) "
            "returning id",
            stale_after_s,
        )

    async def claim_title(self, session_id: str, *, stale_after_s: float) -> bool:
        return await self._claim(
            session_id,
            "update sessions set title_status = 'running', title_claimed_at = now() "
            "where id = $1 and title is null and (title_status in ('none', 'pending') or "
            "(title_status = 'running' and "
            "coalesce(title_claimed_at, '-infinity') < now() - make_interval(secs => $2))) "
            "returning id",
            stale_after_s,
        )

    async def _claim(self, session_id: str, sql: str, stale_after_s: float) -> bool:
        key = _as_uuid(session_id)
        if key is None:
            return False
        # One row, one conditional UPDATE: concurrent claimers serialize on the row lock, and
        # the loser re-checks the condition after the winner commits, so it finds nothing.
        async with self._connection("cannot claim the job") as conn:
            return await conn.fetchval(sql, key, stale_after_s) is not None

    async def sessions_with_stale_titles(self, *, stale_after_s: float) -> list[str]:
        async with self._connection("cannot list titles to do") as conn:
            rows = await conn.fetch(
                "select id from sessions where title is null and (title_status = 'pending' or "
                "(title_status = 'running' and "
                "coalesce(title_claimed_at, '-infinity') < now() - make_interval(secs => $1))) "
                "order by updated_at",
                stale_after_s,
            )
        return [str(row["id"]) for row in rows]

    async def upsert_user_profiles(self, profiles: dict[str, dict[str, JsonValue]]) -> None:
        async with self._connection("cannot store user profiles") as conn:
            await conn.executemany(
                "insert into user_profiles (user_id, profile) values ($1, $2::jsonb) "
                "on conflict (user_id) do update set profile = excluded.profile",
                [
                    (user_id, orjson.dumps(profile).decode())
                    for user_id, profile in profiles.items()
                ],
            )

    async def get_user_profile(self, user_id: str) -> dict[str, JsonValue] | None:
        async with self._connection("cannot read the user profile") as conn:
            data = await conn.fetchval(
                "select profile::text from user_profiles where user_id = $1", user_id
            )
        if data is None:
            return None
        profile: dict[str, JsonValue] = orjson.loads(data)
        return profile
