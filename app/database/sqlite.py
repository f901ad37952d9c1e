"""The embedded store: SQLite through aiosqlite (its own threads, so the event loop never blocks).

One connection writes (behind a lock: a transaction and its commit never interleave with
another's), another reads: in WAL mode a reader sees only committed rows and never waits for the
writer. Every sqlite3 error leaves as a `StoreError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import orjson

from app.database.background import BackgroundGate
from app.database.base import EventConflict, EventRow, Lease, LeaseLost, MissingRow, Row, StoreError
from app.database.migrations import pending, sqlite_statements
from app.database.sql import SQLITE, Dialect, Params, sqlite_time
from app.database.sql.events import SqlEventReads, event_data, message_id_of
from app.database.sql.jobs import SqlJobs
from app.database.sql.leases import SqlLeases
from app.database.sql.profiles import SqlProfiles
from app.database.sql.retention import SqlRetention
from app.database.sql.sessions import SqlSessions
from app.database.sql.usage import SqlUsage
from app.protocol import StoredEvent

_PING_TIMEOUT_S = 1.0
_BUSY_TIMEOUT_S = 5.0
# A row goes in only from its session's current holding (the fence), and never over another.
_INSERT_FENCED = (
    "insert into session_events (session_id, seq, type, message_id, created_at, data) "
    "select ?1, ?2, ?3, ?4, ?5, ?6 where exists (select 1 from session_leases "
    "where session_id = ?1 and holder = ?7 and epoch = ?8 and state <> 'free') "
    "on conflict do nothing"
)
# `event_count` = last seq, `updated_at` = newest event time, both monotonic (a retry's rows
# change nothing); once per session of a batch, as the PostgreSQL schema's statement trigger.
_TOUCH_SESSION = (
    "update sessions set event_count = max(event_count, ?), updated_at = max(updated_at, ?) "
    "where id = ?"
)


def _retryable(error: sqlite3.Error) -> bool:
    """A locked or busy database may answer later; a broken constraint never will."""
    return not isinstance(error, sqlite3.IntegrityError | sqlite3.ProgrammingError)


def _seconds_from_now(seconds: float) -> str:
    return sqlite_time(datetime.now(UTC) + timedelta(seconds=seconds))


def _now() -> str:
    return sqlite_time(datetime.now(UTC))


async def _connect(path: str, *, busy_timeout_s: float) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, timeout=busy_timeout_s)
    db.row_factory = sqlite3.Row
    await db.execute("pragma journal_mode = wal")
    await db.execute("pragma synchronous = normal")
    await db.execute("pragma foreign_keys = on")
    # The functions the shared SQL uses under the names PostgreSQL has (see app/database/sql).
    await db.create_function("now", 0, _now)
    await db.create_function("seconds_from_now", 1, _seconds_from_now)
    return db


class SqliteRunner:
    """`SqlRunner` on one SQLite file: a writer connection behind a lock, and a reader."""

    dialect: Dialect = SQLITE

    def __init__(self, path: str, *, busy_timeout_s: float) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        # One writer: a background operation waits for the one before it, so a live write is
        # behind at most one of them (app/database/background.py).
        self._background = BackgroundGate(slots=1)

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await _connect(self.path, busy_timeout_s=self._busy_timeout_s)
            # Two `:memory:` connections would be two databases: there the writer also reads.
            self._reader = (
                self._writer
                if self.path == ":memory:"
                else await _connect(self.path, busy_timeout_s=self._busy_timeout_s)
            )
        except sqlite3.Error as e:
            await self.close()
            raise StoreError(
                f"cannot open SQLite database {self.path!r}: {e}", retryable=False
            ) from e

    async def close(self) -> None:
        for db in {id(c): c for c in (self._reader, self._writer) if c is not None}.values():
            await db.close()
        self._writer = self._reader = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def _connection(self, db: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if db is None:
            raise StoreError("the SQLite store is not open", retryable=False)
        return db

    async def read(self, sql: str, params: Params) -> list[Row]:
        text, values = self.dialect.compile(sql, params)
        reader = self._connection(self._reader)
        try:
            if reader is self._writer:
                async with self._background.passage(), self._lock:
                    return list(await reader.execute_fetchall(text, values))
            return list(await reader.execute_fetchall(text, values))
        except (sqlite3.Error, ValueError) as e:
            raise _translate(e, "SQLite read failed") from e

    async def write(self, sql: str, params: Params) -> int:
        text, values = self.dialect.compile(sql, params)
        async with self.transaction() as db:
            cursor = await db.execute(text, values)
            return cursor.rowcount

    async def write_returning(self, sql: str, params: Params) -> list[Row]:
        text, values = self.dialect.compile(sql, params)
        async with self.transaction() as db:
            cursor = await db.execute(text, values)
            # Read before the commit: the returned rows are the statement's.
            return list(await cursor.fetchall())

    async def write_many(self, sql: str, params: Sequence[Params]) -> None:
        if not params:
            return
        compiled = [self.dialect.compile(sql, one) for one in params]
        async with self.transaction() as db:
            await db.executemany(compiled[0][0], [values for _, values in compiled])

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[aiosqlite.Connection]:
        """The writer connection for statements that begin with a write (sqlite3 opens the
        transaction before it, taking the write lock at once), committed at the end and rolled
        back on error: one call fewer than `transaction()`, for the event writer's hot path."""
        async with self._background.passage(), self._lock:
            db = self._connection(self._writer)
            try:
                yield db
                await db.commit()
            except (sqlite3.Error, ValueError) as e:
                await _rollback(db)
                raise _translate(e, "SQLite write failed") from e
            except BaseException:
                await _rollback(db)
                raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The writer connection inside `begin immediate` ... commit (rolled back on error), for
        statements that read before they write."""
        async with self.writing() as db:
            await db.execute("begin immediate")
            yield db


async def _rollback(db: aiosqlite.Connection) -> None:
    # A connection that is gone committed nothing: there is nothing to roll back.
    with contextlib.suppress(sqlite3.Error, ValueError):
        await db.rollback()


def _translate(error: Exception, doing: str) -> StoreError:
    if isinstance(error, StoreError):
        return error
    if isinstance(error, sqlite3.IntegrityError) and "FOREIGN KEY" in str(error):
        return MissingRow(f"{doing}: {error}")
    if isinstance(error, sqlite3.Error):
        return StoreError(f"{doing}: {error}", retryable=_retryable(error))
    # aiosqlite's "no active connection": the store was closed under the caller.
    return StoreError(f"{doing}: {error}", retryable=False)


class SqliteEventLog(SqlEventReads):
    """`EventLog` on SQLite: a fenced insert, then the counts, in one transaction. The common
    case is three calls into SQLite's thread (insert, counts, commit), as an unfenced write
    would be; only a batch with rows left out finds out why (retries, or a refusal)."""

    def __init__(self, runner: SqliteRunner) -> None:
        super().__init__(runner)
        self._sqlite = runner

    async def append(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        async with self._sqlite.writing() as db:
            cursor = await db.executemany(_INSERT_FENCED, [_event_params(row) for row in rows])
            if cursor.rowcount < len(rows):
                await _explain_left_out(db, rows)
            await db.executemany(_TOUCH_SESSION, _latest_per_session(rows))


async def _explain_left_out(db: aiosqlite.Connection, rows: Sequence[EventRow]) -> None:
    """Rows the insert left out are fine if they are stored exactly as given (retries, or a
    replay after the lease was released); else the batch is refused: `LeaseLost` when their
    writer does not hold the session's lease, `EventConflict` when another event has the seq."""
    leases = {row.lease for row in rows}
    marks = ", ".join("?" for _ in leases)
    found = await db.execute_fetchall(
        f"select session_id, holder, epoch from session_leases where state <> 'free' "
        f"and session_id in ({marks})",
        [lease.session_id for lease in leases],
    )
    current = {Lease(r["session_id"], r["holder"], r["epoch"]) for r in found}
    strangers = [row for row in rows if row.lease not in current]
    if strangers and (lost := await _differing(db, strangers)):
        raise LeaseLost(
            f"the writer of session {lost[0]} does not hold its lease", session_id=lost[0]
        )
    if differing := await _differing(db, [row for row in rows if row.lease in current]):
        raise EventConflict(
            f"a different event is already stored in session {differing[0]}",
            session_id=differing[0],
        )


def _event_params(row: EventRow) -> tuple[object, ...]:
    event = row.event
    return (
        row.session_id,
        event.seq,
        event.type,
        message_id_of(event),
        sqlite_time(event.created_at),
        event_data(event),
        row.lease.holder,
        row.lease.epoch,
    )


def _latest_per_session(rows: Sequence[EventRow]) -> list[tuple[int, str, str]]:
    latest: dict[str, tuple[int, str]] = {}
    for row in rows:
        seq, moment = row.event.seq, sqlite_time(row.event.created_at)
        known = latest.get(row.session_id)
        latest[row.session_id] = max(known, (seq, moment)) if known else (seq, moment)
    return [(seq, moment, session_id) for session_id, (seq, moment) in latest.items()]


async def _differing(db: aiosqlite.Connection, rows: Sequence[EventRow]) -> list[str]:
    """Sessions among `rows` with a row not stored exactly as given (absent or different)."""
    by_session: dict[str, dict[int, StoredEvent]] = defaultdict(dict)
    for row in rows:
        by_session[row.session_id][row.event.seq] = row.event
    differing = []
    for session_id, events in by_session.items():
        stored = await db.execute_fetchall(
            "select seq, data from session_events where session_id = ? and seq between ? and ?",
            [session_id, min(events), max(events)],
        )
        stored_data = {r["seq"]: orjson.loads(r["data"]) for r in stored}
        if any(stored_data.get(seq) != orjson.loads(event_data(e)) for seq, e in events.items()):
            differing.append(session_id)
    return differing


class SqliteStore:
    """`Store` on one SQLite file (or `:memory:`)."""

    kind = "sqlite"

    def __init__(self, path: str, *, timeout_s: float = _BUSY_TIMEOUT_S) -> None:
        # How long a statement waits for another process's write lock before it fails.
        self._runner = SqliteRunner(path, busy_timeout_s=timeout_s)
        self.events = SqliteEventLog(self._runner)
        self.sessions = SqlSessions(self._runner)
        self.leases = SqlLeases(self._runner)
        self.jobs = SqlJobs(self._runner)
        self.profiles = SqlProfiles(self._runner)
        self.usage = SqlUsage(self._runner)
        self.retention = SqlRetention(self._runner)

    async def open(self) -> None:
        await self._runner.open()
        try:
            await self._migrate()
        except BaseException:
            await self._runner.close()
            raise

    async def _migrate(self) -> None:
        """Bring the schema to the latest version in one transaction (rows are kept)."""
        await self._runner.write(
            "create table if not exists schema_version (version integer not null, "
            "applied_at text not null)",
            {},
        )
        # One process migrates; others wait on `begin immediate`, then find it done.
        async with self._runner.transaction() as db:
            rows = await db.execute_fetchall("select coalesce(max(version), 0) from schema_version")
            for step in pending("sqlite", int(next(iter(rows))[0])):
                for statement in sqlite_statements(step.sql):
                    await db.execute(statement)
                await db.execute("insert into schema_version values (?, ?)", (step.version, _now()))

    async def close(self) -> None:
        await self._runner.close()

    async def ping(self) -> None:
        # Ready means writable. A separate short-lived connection with a short busy timeout
        # probes the write lock, so a probe that waits never leaves the main connection in a
        # half-started transaction.
        if not self._runner.is_open:
            raise StoreError("the SQLite store is not open", retryable=False)
        try:
            async with aiosqlite.connect(self._runner.path, timeout=_PING_TIMEOUT_S) as probe:
                await probe.execute("begin immediate")
                await probe.execute("rollback")
        except sqlite3.Error as e:
            raise StoreError(f"SQLite does not accept writes: {e}", retryable=True) from e
