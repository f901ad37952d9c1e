"""What only SQLite has: the file, its schema on open and re-open, rows as SQLite holds them, the
in-memory database, its write probe, and its errors.

The behaviour every store shares is tested once, on all three stores, in the contract suites
(test_*_contract.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from app.database.base import StoreError
from app.database.migrations import latest_version
from app.database.sqlite import SqliteStore
from tests.database.builders import (
    HOLDER,
    assistant_message,
    leased,
    leased_session,
    rows_of,
    session_record,
    user_message,
)


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


@pytest.fixture
def raw(db_path: str) -> Iterator[sqlite3.Connection]:
    """A second, plain connection to the store's file."""
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


# ---------------------------------------------------------------- the file


async def test_schema_is_made_on_open_and_a_reopen_keeps_the_rows(db_path: str) -> None:
    record = session_record(owner="alice")
    first = SqliteStore(db_path)
    await first.open()
    try:
        await first.sessions.create(record)
        lease = await leased(first, record.id)
        await first.events.append(rows_of(lease, user_message(1, "kept")))
        await first.profiles.upsert({"1": {"name": "Ada"}})
    finally:
        await first.close()

    again = SqliteStore(db_path)
    await again.open()
    try:
        # The lease outlived the process that held it: its holding stands until it expires.
        assert await again.sessions.get(record.id) == replace(
            record, event_count=1, updated_at=user_message(1, "").created_at, live=True
        )
        assert await again.events.read(record.id) == [user_message(1, "kept")]
        assert await again.profiles.get("1") == {"name": "Ada"}
        assert await again.leases.renew([lease], ttl_s=30) == {record.id}
    finally:
        await again.close()

    db = sqlite3.connect(db_path)
    try:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
        versions = db.execute("select version from schema_version").fetchall()
    finally:
        db.close()
    assert {"sessions", "session_events", "session_leases", "user_profiles"} <= tables
    assert versions == [(v,) for v in range(1, latest_version("sqlite") + 1)]


async def test_delete_removes_the_rows_of_its_events_and_lease(
    store: SqliteStore, db_path: str
) -> None:
    (doomed, lease), (kept, kept_lease) = await leased_session(store), await leased_session(store)
    await store.events.append(rows_of(lease, user_message(1, "x"), assistant_message(2, "y")))
    await store.events.append(rows_of(kept_lease, user_message(1, "z")))

    assert await store.sessions.delete(doomed.id) is True
    events = "select count(*) from session_events where session_id = ?"
    leases = "select count(*) from session_leases where session_id = ?"
    assert raw_count(db_path, events, doomed.id) == 0
    assert raw_count(db_path, leases, doomed.id) == 0
    assert raw_count(db_path, events, kept.id) == 1
    assert raw_count(db_path, leases, kept.id) == 1


async def test_times_are_fixed_width_utc_text(store: SqliteStore, db_path: str) -> None:
    record, lease = await leased_session(store)
    await store.events.append(rows_of(lease, user_message(1, "hi")))
    db = sqlite3.connect(db_path)
    try:
        created, updated = db.execute(
            "select created_at, updated_at from sessions where id = ?", (record.id,)
        ).fetchone()
        expires = db.execute("select expires_at from session_leases").fetchone()[0]
    finally:
        db.close()
    assert (created, updated) == ("2025-03-01T12:00:00.123456Z", "2025-03-01T12:00:01.123456Z")
    assert len(expires) == len(created)
    assert expires.endswith("Z")


async def test_an_in_memory_store_reads_what_it_wrote() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    try:
        record, lease = await leased_session(store)
        await store.events.append(rows_of(lease, user_message(1, "hi")))
        assert await store.events.read(record.id) == [user_message(1, "hi")]
        assert (await store.sessions.get(record.id)).event_count == 1  # type: ignore[union-attr]
        await store.ping()
    finally:
        await store.close()


# ---------------------------------------------------------------- ping and errors


async def test_ping_fails_retryably_while_another_process_holds_the_write_lock(
    store: SqliteStore, raw: sqlite3.Connection
) -> None:
    raw.execute("begin immediate")
    try:
        with pytest.raises(StoreError) as caught:
            await store.ping()  # waits its short busy timeout, then gives up
    finally:
        raw.execute("rollback")
    assert caught.value.retryable is True
    await store.ping()


async def test_a_read_on_a_closed_store_is_a_store_error(store: SqliteStore) -> None:
    record = session_record()
    await store.sessions.create(record)
    await store.close()
    with pytest.raises(StoreError) as caught:
        await store.sessions.get(record.id)
    assert caught.value.retryable is False
    with pytest.raises(StoreError):
        await store.events.read(record.id)


async def test_a_read_the_database_fails_is_a_store_error_not_sqlite3s(
    store: SqliteStore, raw: sqlite3.Connection
) -> None:
    raw.execute("drop table user_profiles")  # the file broken under the store
    with pytest.raises(StoreError) as caught:
        await store.profiles.get("1")
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


async def test_a_write_the_database_refuses_is_a_store_error(
    store: SqliteStore, raw: sqlite3.Connection
) -> None:
    raw.execute("drop table user_profiles")
    with pytest.raises(StoreError) as caught:
        await store.profiles.upsert({"1": {"name": "Ada"}})
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


async def test_a_second_store_on_the_same_file_sees_the_first_ones_lease(db_path: str) -> None:
    first, second = SqliteStore(db_path), SqliteStore(db_path)
    await first.open()
    await second.open()
    try:
        record, _ = await leased_session(first)
        assert await second.leases.release_holder(HOLDER) == 1
        assert (await leased(second, record.id, holder="b")).epoch == 2
    finally:
        await first.close()
        await second.close()
