"""The PostgreSQL store: asyncpg and a pool (plain PostgreSQL, Supabase direct or pooler).

asyncpg types and errors stay in this module: every failure leaves as a `StoreError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from app.database.background import BackgroundGate
from app.database.base import EventConflict, EventRow, LeaseLost, MissingRow, Row, StoreError
from app.database.migrations import pending
from app.database.sql import POSTGRES, Dialect, Params, canonical_id
from app.database.sql.events import SqlEventReads, message_id_of
from app.database.sql.jobs import SqlJobs
from app.database.sql.leases import SqlLeases
from app.database.sql.profiles import SqlProfiles
from app.database.sql.retention import SqlRetention
from app.database.sql.sessions import SqlSessions
from app.database.sql.usage import SqlUsage
from app.protocol import stored_event_adapter

# Supavisor's transaction mode: a connection is shared between clients from one transaction to the
# next, so a statement prepared on it may be gone (or someone else's) by the next call.
TRANSACTION_POOLER_PORT = 6543
# Any constant works; it only has to be the same in every process migrating one database.
_MIGRATION_LOCK_KEY = 0x5E55_10_17
# SQLSTATE classes worth trying again: connection exceptions, transaction rollbacks (serialization,
# deadlock), insufficient resources (too many connections), operator intervention (shutdown).
_RETRYABLE_CLASSES = frozenset({"08", "40", "53", "57"})
# Raised by the schema's `append_session_events` (migration 0004).
LEASE_LOST_STATE = "RT412"
CONFLICT_STATE = "RT409"
FOREIGN_KEY_VIOLATION = "23503"
# InternalClientError: the driver's own state after a connection broke mid-call ("another
# operation is in progress"); the pool replaces the connection, so the next attempt works.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


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


def translate(error: Exception, doing: str) -> StoreError:
    """A driver error as our own: lease and conflict refusals by their SQLSTATE, the rest by
    whether trying again may help."""
    if isinstance(error, asyncpg.PostgresError):
        state = str(error.sqlstate or "")
        if state == LEASE_LOST_STATE:
            return LeaseLost(f"{doing}: {error}")
        if state == CONFLICT_STATE:
            return EventConflict(f"{doing}: {error}")
        if state == FOREIGN_KEY_VIOLATION:
            return MissingRow(f"{doing}: {error}")
        return StoreError(f"{doing}: {error} ({state})", retryable=state[:2] in _RETRYABLE_CLASSES)
    if isinstance(error, asyncpg.DataError):
        # A value the driver cannot send (a malformed uuid, say): trying again cannot help.
        return StoreError(f"{doing}: {error}", retryable=False)
    # Lost or refused connections, timeouts, a closed pool: the next attempt may well work.
    return StoreError(f"{doing}: {error!r}", retryable=True)


class PostgresRunner:
    """`SqlRunner` on an asyncpg pool."""

    dialect: Dialect = POSTGRES

    def __init__(self, pool_source: PostgresStore) -> None:
        self._store = pool_source

    async def read(self, sql: str, params: Params) -> list[Row]:
        text, values = self.dialect.compile(sql, params)
        async with self._store.connection("cannot read") as conn:
            return list(await conn.fetch(text, *values))

    async def write(self, sql: str, params: Params) -> int:
        text, values = self.dialect.compile(sql, params)
        async with self._store.connection("cannot write") as conn:
            status: str = await conn.execute(text, *values)
        # "UPDATE 3", "DELETE 0", "INSERT 0 1": the count is the last word.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def write_returning(self, sql: str, params: Params) -> list[Row]:
        text, values = self.dialect.compile(sql, params)
        async with self._store.connection("cannot write") as conn:
            return list(await conn.fetch(text, *values))

    async def write_many(self, sql: str, params: Sequence[Params]) -> None:
        if not params:
            return
        compiled = [self.dialect.compile(sql, one) for one in params]
        async with self._store.connection("cannot write") as conn, conn.transaction():
            await conn.executemany(compiled[0][0], [values for _, values in compiled])


class PostgresEventLog(SqlEventReads):
    """`EventLog` on PostgreSQL: one call of the schema's `append_session_events`, which fences,
    inserts and checks conflicts in one statement (the Supabase store calls the same function)."""

    def __init__(self, store: PostgresStore, runner: PostgresRunner) -> None:
        super().__init__(runner)
        self._store = store

    async def append(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        try:
            payload = append_payload(rows).decode()
        except (TypeError, ValueError) as e:
            # A lone surrogate, say: no store can encode it, so trying again cannot help.
            raise StoreError(f"cannot store events: {e}", retryable=False) from e
        try:
            async with self._store.connection("cannot store events") as conn:
                await conn.execute("select public.append_session_events($1::jsonb)", payload)
        except (LeaseLost, EventConflict) as e:
            e.session_id = _single_session(rows)
            raise


def _single_session(rows: Sequence[EventRow]) -> str | None:
    sessions = {row.session_id for row in rows}
    return sessions.pop() if len(sessions) == 1 else None


def append_row(row: EventRow) -> dict[str, Any]:
    """One element of `append_session_events`' argument: the event's columns and its lease."""
    event = row.event
    return _envelope(row) | {"data": stored_event_adapter.dump_python(event, mode="json")}


def append_payload(rows: Sequence[EventRow]) -> bytes:
    """`append_session_events`' argument as JSON text, each event's own JSON spliced in as it
    is serialized for clients (no intermediate objects: this is the write path's hot loop)."""
    parts = [
        orjson.dumps(_envelope(row))[:-1] + b',"data":' + stored_event_adapter.dump_json(row.event)
        for row in rows
    ]
    return b"[" + b"},".join(parts) + b"}]"


def _envelope(row: EventRow) -> dict[str, Any]:
    session_id = canonical_id(row.session_id)
    if session_id is None:
        raise StoreError(f"cannot store events of session {row.session_id!r}", retryable=False)
    event = row.event
    return {
        "session_id": session_id,
        "seq": event.seq,
        "type": event.type,
        "message_id": message_id_of(event),
        "created_at": event.created_at.isoformat(),
        "writer": row.lease.holder,
        "writer_epoch": row.lease.epoch,
    }


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
        # Background work holds at most a quarter of the pool: live requests always find a
        # connection (app/database/background.py).
        self._background = BackgroundGate(slots=max(1, pool_max // 4))
        runner = PostgresRunner(self)
        self.events = PostgresEventLog(self, runner)
        self.sessions = SqlSessions(runner)
        self.leases = SqlLeases(runner)
        self.jobs = SqlJobs(runner)
        self.profiles = SqlProfiles(runner)
        self.usage = SqlUsage(runner)
        self.retention = SqlRetention(runner)

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
        async with self.connection("cannot migrate the schema") as conn, conn.transaction():
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
            pool, self._pool = self._pool, None
            await _close_pool(pool, timeout_s=self._timeout_s)

    @asynccontextmanager
    async def connection(self, doing: str) -> AsyncIterator[Any]:
        """A pooled connection; driver errors inside become `StoreError`s."""
        if self._pool is None:
            raise StoreError("the PostgreSQL store is not open", retryable=False)
        try:
            async with (
                self._background.passage(),
                self._pool.acquire(timeout=self._timeout_s) as conn,
            ):
                yield conn
        except _DRIVER_ERRORS as e:
            raise translate(e, doing) from e

    async def ping(self) -> None:
        async with self.connection("PostgreSQL does not answer") as conn:
            await conn.fetchval("select 1")


async def _close_pool(pool: asyncpg.Pool, *, timeout_s: float) -> None:
    """Close the pool gracefully, or terminate it when a connection does not come back in time
    (a store outage at shutdown must not hold the process)."""
    try:
        async with asyncio.timeout(timeout_s):
            await pool.close()
    except (*_DRIVER_ERRORS,):
        pool.terminate()
