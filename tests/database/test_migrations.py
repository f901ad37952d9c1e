"""Schema versions: an older SQLite or PostgreSQL database is upgraded at start, rows kept."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import asyncpg
import pytest

from app.database.base import LeaseState, Store, StoreError
from app.database.migrations import latest_version, migrations, render_schema_sql, sqlite_statements
from app.database.postgres import PostgresStore
from app.database.sqlite import SqliteStore
from app.protocol import StoredEvent, UserMessageEvent
from tests.database.builders import T0, assistant_message, leased, rows_of, user_message
from tests.database.conftest import SCHEMA_SQL, connect_admin, dsn_of

SESSION_ID = str(uuid.uuid4())
FAR = "2999-01-01T00:00:00.000000Z"
V1_EVENTS: list[StoredEvent] = [user_message(1, "kept"), assistant_message(2, "also kept")]


async def works_at_the_latest_version(store: Store) -> None:
    """The upgraded session takes the newest columns, leases, jobs and the event trigger."""
    assert await store.jobs.unsummarized_sessions() == [SESSION_ID]  # a v4 column
    await store.sessions.save_context_summary(SESSION_ID, summary="s", upto_seq=2)  # a v2 column
    lease = await leased(store, SESSION_ID)
    assert lease.epoch == 1
    await store.events.append(rows_of(lease, user_message(3, "new"), assistant_message(4, "a")))
    # v5: the answer's tokens are counted for the session's owner (builders' usage: 3 tokens).
    day = assistant_message(4, "").created_at.replace(hour=0, minute=0, second=0, microsecond=0)
    assert await store.usage.amount("alice", "tokens", window_start=day) == 3
    after = await store.sessions.get(SESSION_ID)
    assert after is not None
    assert (after.event_count, after.updated_at) == (4, assistant_message(4, "").created_at)
    assert (after.context_summary, after.context_summary_seq) == ("s", 2)
    await store.jobs.request_summary(SESSION_ID)
    claim = await store.jobs.claim(SESSION_ID, "summary", claimant="a", stale_after_s=60)
    assert claim is not None
    assert claim.attempts == 0


async def a_v3_lease_still_holds(store: Store) -> None:
    """A lease taken before version 4 (epoch 0) still keeps others out, and its holder takes it
    again at epoch 1."""
    assert await store.leases.acquire(SESSION_ID, holder="new", ttl_s=30) is LeaseState.LIVE
    assert (await leased(store, SESSION_ID, holder="old")).epoch == 1


def test_schema_sql_is_the_migrations_in_order() -> None:
    # schema.sql is generated; an edit of a migration without regenerating it fails here.
    assert SCHEMA_SQL.read_text() == render_schema_sql(), (
        "regenerate it: python -m app.database.migrations > schema.sql"
    )


def test_versions_are_numbered_without_gaps() -> None:
    for dialect in ("postgres", "sqlite"):
        steps = migrations(dialect)
        assert [step.version for step in steps] == list(range(1, latest_version(dialect) + 1))
    # Both dialects move together: version N means the same schema on either.
    assert latest_version("postgres") == latest_version("sqlite") == 6


# ---------------------------------------------------------------- SQLite


def make_sqlite(path: str, *, version: int = 1) -> None:
    """A file as `version` of the app left it, with a session and two events."""
    db = sqlite3.connect(path)
    try:
        db.execute(
            "create table schema_version (version integer not null, applied_at text not null)"
        )
        for step in migrations("sqlite")[:version]:
            for statement in sqlite_statements(step.sql):
                db.execute(statement)
            db.execute(
                "insert into schema_version values (?, '2025-01-01T00:00:00.000000Z')",
                (step.version,),
            )
        db.execute(
            "insert into sessions (id, owner, created_at, updated_at, model, event_count) "
            "values (?, 'alice', '2025-03-01T12:00:00.123456Z', '2025-03-01T12:00:02.123456Z', "
            "'m', 2)",
            (SESSION_ID,),
        )
        for event in V1_EVENTS:
            data = event.model_dump_json()
            message_id = event.id if isinstance(event, UserMessageEvent) else None
            db.execute(
                "insert into session_events values (?, ?, ?, ?, ?, ?)",
                (
                    SESSION_ID,
                    event.seq,
                    event.type,
                    message_id,
                    "2025-03-01T12:00:00.000000Z",
                    data,
                ),
            )
        db.commit()
    finally:
        db.close()


async def test_sqlite_v1_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    make_sqlite(path, version=1)
    store = SqliteStore(path)
    await store.open()
    try:
        record = await store.sessions.get(SESSION_ID)
        assert record is not None
        assert (record.owner, record.event_count, record.created_at) == ("alice", 2, T0)
        assert (record.context_summary, record.context_summary_seq) == (None, 0)
        assert await store.events.read(SESSION_ID) == V1_EVENTS
        await works_at_the_latest_version(store)
    finally:
        await store.close()
    db = sqlite3.connect(path)
    try:
        versions = [row[0] for row in db.execute("select version from schema_version")]
        indexes = {
            row[0] for row in db.execute("select name from sqlite_master where type='index'")
        }
    finally:
        db.close()
    assert versions == list(range(1, latest_version("sqlite") + 1))
    assert "sessions_summary_todo_idx" in indexes


async def test_sqlite_v3_leases_are_kept_at_epoch_0(tmp_path: Path) -> None:
    path = str(tmp_path / "v3.db")
    make_sqlite(path, version=3)
    with closing(sqlite3.connect(path)) as db:
        db.execute("insert into session_leases values (?, 'old', 'live', ?)", (SESSION_ID, FAR))
        db.commit()
    store = SqliteStore(path)
    await store.open()
    try:
        with closing(sqlite3.connect(path)) as db:
            rows = db.execute("select holder, state, expires_at, epoch from session_leases")
            assert rows.fetchall() == [("old", "live", FAR, 0)]
        await a_v3_lease_still_holds(store)
    finally:
        await store.close()


async def test_sqlite_newer_than_the_app_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "future.db")
    make_sqlite(path)
    db = sqlite3.connect(path)
    db.execute("insert into schema_version values (99, '2030-01-01T00:00:00.000000Z')")
    db.commit()
    db.close()
    store = SqliteStore(path)
    with pytest.raises(StoreError, match="version 99, newer than this app"):
        await store.open()
    await store.close()


# ---------------------------------------------------------------- PostgreSQL


@asynccontextmanager
async def pg_at(version: int) -> AsyncIterator[str]:
    """A database at `version` (as that release's schema.sql made it), with a session and its
    events; dropped afterwards."""
    admin = await connect_admin()
    name = f"migrate_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'create database "{name}"')
    conn = await asyncpg.connect(dsn_of(name), timeout=5)
    try:
        await conn.execute(
            "create table schema_version (version integer not null, "
            "applied_at timestamptz not null default now())"
        )
        for step in migrations("postgres")[:version]:
            await conn.execute(step.sql)
            await conn.execute("insert into schema_version (version) values ($1)", step.version)
        await conn.execute(
            "insert into sessions (id, owner, created_at, updated_at, model, event_count) "
            "values ($1, 'alice', $2, $2, 'm', 2)",
            uuid.UUID(SESSION_ID),
            T0,
        )
        for event in V1_EVENTS:
            await conn.execute(
                "insert into session_events (session_id, seq, type, created_at, data) "
                "values ($1, $2, $3, $4, $5::jsonb)",
                uuid.UUID(SESSION_ID),
                event.seq,
                event.type,
                event.created_at,
                event.model_dump_json(),
            )
        await conn.close()
        yield dsn_of(name)
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


@pytest.fixture
async def pg_v1() -> AsyncIterator[str]:
    async with pg_at(1) as dsn:
        yield dsn


async def test_postgres_v1_is_upgraded_and_keeps_its_rows(pg_v1: str) -> None:
    store = PostgresStore(pg_v1, pool_min=1, pool_max=2)
    await store.open()
    try:
        record = await store.sessions.get(SESSION_ID)
        assert record is not None
        assert (record.owner, record.event_count, record.context_summary) == ("alice", 2, None)
        assert await store.events.read(SESSION_ID) == V1_EVENTS
        await works_at_the_latest_version(store)
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_v1, timeout=5)
    try:
        versions = [row[0] for row in await conn.fetch("select version from schema_version")]
    finally:
        await conn.close()
    assert versions == list(range(1, latest_version("postgres") + 1))


async def test_postgres_v3_leases_are_kept_at_epoch_0() -> None:
    async with pg_at(3) as dsn:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(
                "insert into session_leases (session_id, holder, state, expires_at) "
                "values ($1, 'old', 'live', now() + interval '1 hour')",
                uuid.UUID(SESSION_ID),
            )
            store = PostgresStore(dsn, pool_min=1, pool_max=1)
            await store.open()
            try:
                assert await conn.fetchval("select epoch from session_leases") == 0
                await a_v3_lease_still_holds(store)
            finally:
                await store.close()
        finally:
            await conn.close()


async def test_postgres_stores_starting_together_migrate_once(pg_v1: str) -> None:
    stores = [PostgresStore(pg_v1, pool_min=1, pool_max=1) for _ in range(3)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
    finally:
        for store in stores:
            await store.close()
    conn = await asyncpg.connect(pg_v1, timeout=5)
    try:
        versions = [row[0] for row in await conn.fetch("select version from schema_version")]
    finally:
        await conn.close()
    assert versions == list(range(1, latest_version("postgres") + 1))


async def test_postgres_newer_than_the_app_is_refused(pg_v1: str) -> None:
    conn = await asyncpg.connect(pg_v1, timeout=5)
    await conn.execute("insert into schema_version (version) values (99)")
    await conn.close()
    store = PostgresStore(pg_v1, pool_min=1, pool_max=1)
    with pytest.raises(StoreError, match="version 99, newer than this app"):
        await store.open()
    await store.close()
