"""Schema versions: an older SQLite or PostgreSQL database is upgraded at start, rows kept."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from app.database.base import StoreError
from app.database.migrations import latest_version, migrations, render_schema_sql, sqlite_statements
from app.database.postgres import PostgresStore
from app.database.sqlite import SqliteStore
from app.protocol import StoredEvent, UserMessageEvent
from tests.database.builders import T0, assistant_message, rows_of, user_message
from tests.database.conftest import SCHEMA_SQL, connect_admin, dsn_of

SESSION_ID = str(uuid.uuid4())
V1_EVENTS: list[StoredEvent] = [user_message(1, "kept"), assistant_message(2, "also kept")]


def test_schema_sql_is_the_migrations_in_order() -> None:
    # schema.sql is generated; an edit of a migration without regenerating it fails here.
    assert SCHEMA_SQL.read_text() == render_schema_sql(), (
        "regenerate it: python -m app.database.migrations > schema.sql"
    )


def test_versions_are_numbered_without_gaps() -> None:
    for dialect in ("postgres", "sqlite"):
        steps = migrations(dialect)
        assert [step.version for step in steps] == list(range(1, latest_version(dialect) + 1))
    assert latest_version("postgres") >= 2
    assert latest_version("sqlite") >= 2


# ---------------------------------------------------------------- SQLite


def make_sqlite_v1(path: str) -> None:
    """A file as version 1 of the app left it, with a session and two events."""
    db = sqlite3.connect(path)
    try:
        db.execute(
            "create table schema_version (version integer not null, applied_at text not null)"
        )
        for statement in sqlite_statements(migrations("sqlite")[0].sql):
            db.execute(statement)
        db.execute("insert into schema_version values (1, '2025-01-01T00:00:00.000000Z')")
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
    make_sqlite_v1(path)
    store = SqliteStore(path)
    await store.open()
    try:
        record = await store.get_session(SESSION_ID)
        assert record is not None
        assert (record.owner, record.event_count, record.created_at) == ("alice", 2, T0)
        assert (record.context_summary, record.context_summary_seq) == (None, 0)
        assert await store.list_events(SESSION_ID, after_seq=0, limit=None) == V1_EVENTS
        await store.save_context_summary(SESSION_ID, summary="s", upto_seq=2)  # a v2 column
        await store.append_events(rows_of(SESSION_ID, user_message(3, "new")))
        assert await store.last_seq(SESSION_ID) == 3
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


async def test_sqlite_newer_than_the_app_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "future.db")
    make_sqlite_v1(path)
    db = sqlite3.connect(path)
    db.execute("insert into schema_version values (99, '2030-01-01T00:00:00.000000Z')")
    db.commit()
    db.close()
    store = SqliteStore(path)
    with pytest.raises(StoreError, match="version 99, newer than this app"):
        await store.open()
    await store.close()


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
async def pg_v1() -> AsyncIterator[str]:
    """A database at version 1 (as the first release's schema.sql made it), with rows."""
    admin = await connect_admin()
    name = f"migrate_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'create database "{name}"')
    conn = await asyncpg.connect(dsn_of(name), timeout=5)
    try:
        await conn.execute(
            "create table schema_version (version integer not null, "
            "applied_at timestamptz not null default now())"
        )
        await conn.execute(migrations("postgres")[0].sql)
        await conn.execute("insert into schema_version (version) values (1)")
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


async def test_postgres_v1_is_upgraded_and_keeps_its_rows(pg_v1: str) -> None:
    store = PostgresStore(pg_v1, pool_min=1, pool_max=2)
    await store.open()
    try:
        record = await store.get_session(SESSION_ID)
        assert record is not None
        assert (record.owner, record.event_count, record.context_summary) == ("alice", 2, None)
        assert await store.list_events(SESSION_ID, after_seq=0, limit=None) == V1_EVENTS
        # Version 2's trigger now keeps the count.
        await store.append_events(rows_of(SESSION_ID, user_message(3, "new")))
        after = await store.get_session(SESSION_ID)
        assert after is not None
        assert (after.event_count, after.updated_at) == (3, user_message(3, "").created_at)
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_v1, timeout=5)
    try:
        versions = [row[0] for row in await conn.fetch("select version from schema_version")]
    finally:
        await conn.close()
    assert versions == list(range(1, latest_version("postgres") + 1))


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
