"""`schema.sql` on a real, empty, plain PostgreSQL database (a throwaway one per test)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from app.database.migrations import latest_version
from tests.database.conftest import SCHEMA_SQL, connect_admin, dsn_of

EXPECTED_COLUMNS: dict[str, dict[str, str]] = {
    "schema_version": {"version": "integer", "applied_at": "timestamp with time zone"},
    "sessions": {
        "id": "uuid",
        "owner": "text",
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
        "model": "text",
        "title": "text",
        "summary": "text",
        "summary_status": "text",
        "summary_seq": "integer",
        "event_count": "integer",
        "context_summary": "text",
        "context_summary_seq": "integer",
    },
    "session_events": {
        "session_id": "uuid",
        "seq": "integer",
        "type": "text",
        "message_id": "text",
        "created_at": "timestamp with time zone",
        "data": "jsonb",
    },
    "user_profiles": {"user_id": "text", "profile": "jsonb"},
}


@pytest.fixture
async def empty_database() -> AsyncIterator[asyncpg.Connection]:
    """A connection to a freshly created, empty database, dropped afterwards."""
    admin = await connect_admin()
    name = f"schema_test_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'create database "{name}"')
        try:
            conn = await asyncpg.connect(dsn_of(name), timeout=5)
            try:
                yield conn
            finally:
                await conn.close()
        finally:
            await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


async def columns_of(conn: asyncpg.Connection) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(
        "select table_name, column_name, data_type from information_schema.columns "
        "where table_schema = 'public'"
    )
    tables: dict[str, dict[str, str]] = {}
    for row in rows:
        tables.setdefault(str(row["table_name"]), {})[str(row["column_name"])] = str(
            row["data_type"]
        )
    return tables


async def test_schema_applies_to_an_empty_database_twice(
    empty_database: asyncpg.Connection,
) -> None:
    conn = empty_database
    assert await columns_of(conn) == {}
    sql = SCHEMA_SQL.read_text()
    await conn.execute(sql)
    await conn.execute(sql)  # idempotent: a second run changes nothing and raises nothing

    tables = await columns_of(conn)
    for table, expected in EXPECTED_COLUMNS.items():
        assert table in tables, f"missing table {table}"
        assert expected.items() <= tables[table].items(), (table, tables[table])
    versions = [row["version"] for row in await conn.fetch("select version from schema_version")]
    assert versions == list(range(1, latest_version("postgres") + 1))


async def test_schema_keys_and_checks_hold(empty_database: asyncpg.Connection) -> None:
    conn = empty_database
    await conn.execute(SCHEMA_SQL.read_text())
    session_id = await conn.fetchval("insert into sessions (model) values ('m') returning id")
    assert isinstance(session_id, uuid.UUID)
    status = await conn.fetchval("select summary_status from sessions where id = $1", session_id)
    assert status == "none"

    insert_event = (
        "insert into session_events (session_id, seq, type, message_id, data) "
        "values ($1, $2, $3, $4, $5::jsonb)"
    )
    data = orjson.dumps({"text": "hi"}).decode()
    await conn.execute(insert_event, session_id, 1, "user.message", "m-1", data)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert_event, session_id, 1, "assistant.message", None, data)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert_event, session_id, 2, "user.message", "m-1", data)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(insert_event, session_id, 0, "user.message", None, data)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(insert_event, session_id, 2, "response.delta", None, data)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(insert_event, uuid.uuid4(), 1, "user.message", None, data)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("update sessions set summary_status = 'bogus' where id = $1", session_id)

    await conn.execute("delete from sessions where id = $1", session_id)
    assert await conn.fetchval("select count(*) from session_events") == 0
