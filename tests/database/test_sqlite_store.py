"""What only SQLite has: the file, its schema on open and re-open, and rows as SQLite holds them.

The behaviour every store shares is tested once, on all three stores, in test_store_contract.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from app.database.migrations import latest_version
from app.database.sqlite import SqliteStore
from tests.database.builders import assistant_message, rows_of, session_record, user_message


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture
async def store(db_path: str) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(db_path)
    await opened.open()
    yield opened
    await opened.close()


def raw_count(path: str, sql: str, *params: object) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute(sql, params).fetchone()[0])
    finally:
        db.close()


# ---------------------------------------------------------------- the file


async def test_schema_is_made_on_open_and_a_reopen_keeps_the_rows(db_path: str) -> None:
    record = session_record(owner="alice")
    first = SqliteStore(db_path)
    await first.open()
    try:
        await first.create_session(record)
        await first.append_events(rows_of(record.id, user_message(1, "kept")))
        await first.upsert_user_profiles({"1": {"name": "Ada"}})
    finally:
        await first.close()

    again = SqliteStore(db_path)
    await again.open()
    try:
        assert await again.get_session(record.id) == replace(
            record, event_count=1, updated_at=user_message(1, "").created_at
        )
        assert await again.list_events(record.id, after_seq=0, limit=None) == [
            user_message(1, "kept")
        ]
        assert await again.get_user_profile("1") == {"name": "Ada"}
    finally:
        await again.close()

    db = sqlite3.connect(db_path)
    try:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
        versions = db.execute("select version from schema_version").fetchall()
    finally:
        db.close()
    assert {"sessions", "session_events", "user_profiles", "schema_version"} <= tables
    assert versions == [(v,) for v in range(1, latest_version("sqlite") + 1)]


async def test_delete_session_removes_its_events(store: SqliteStore, db_path: str) -> None:
    doomed, kept = session_record(), session_record()
    await store.create_session(doomed)
    await store.create_session(kept)
    await store.append_events(rows_of(doomed.id, user_message(1, "x"), assistant_message(2, "y")))
    await store.append_events(rows_of(kept.id, user_message(1, "z")))

    assert await store.delete_session(doomed.id) is True
    assert await store.get_session(doomed.id) is None
    assert await store.list_events(doomed.id, after_seq=0, limit=None) == []
    count = "select count(*) from session_events where session_id = ?"
    assert raw_count(db_path, count, doomed.id) == 0
    assert raw_count(db_path, count, kept.id) == 1
    assert await store.delete_session(doomed.id) is False
