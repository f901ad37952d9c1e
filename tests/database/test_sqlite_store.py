"""`SqliteStore` on a real SQLite file."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.database.base import EventRow, SessionCursor, SessionRecord, StoreError
from app.database.migrations import latest_version
from app.database.sqlite import SqliteStore
from app.protocol import (
    AssistantMessageEvent,
    ResponseStatus,
    StoredEvent,
    SummaryStatus,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture
async def store(db_path: str) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(db_path)
    await opened.open()
    yield opened
    await opened.close()


def session_record(
    *, at: datetime = T0, owner: str | None = None, session_id: str | None = None
) -> SessionRecord:
    return SessionRecord(
        id=session_id or str(uuid.uuid4()), created_at=at, updated_at=at, model="m", owner=owner
    )


def user_message(seq: int, text: str, *, message_id: str | None = None) -> UserMessageEvent:
    return UserMessageEvent(
        seq=seq,
        created_at=T0 + timedelta(seconds=seq),
        id=message_id or f"msg-{seq}",
        text=text,
    )


def assistant_message(seq: int, text: str) -> AssistantMessageEvent:
    return AssistantMessageEvent(
        seq=seq,
        created_at=T0 + timedelta(seconds=seq),
        response_id=f"resp-{seq}",
        status=ResponseStatus.COMPLETED,
        text=text,
        finish_reason="stop",
        usage={"completion_tokens": 1},
        model="m",
    )


def rows_of(session_id: str, *events: StoredEvent) -> list[EventRow]:
    return [EventRow(session_id, event) for event in events]


def raw_count(path: str, sql: str, *params: object) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute(sql, params).fetchone()[0])
    finally:
        db.close()


# ---------------------------------------------------------------- sessions


async def test_a_created_session_reads_back_equal(store: SqliteStore) -> None:
    record = session_record(owner="alice")
    await store.create_session(record)
    assert await store.get_session(record.id) == record
    assert await store.get_session(str(uuid.uuid4())) is None


async def test_sessions_list_newest_first_and_page_with_a_cursor(store: SqliteStore) -> None:
    records = [session_record(at=T0 + timedelta(minutes=i)) for i in range(5)]
    for record in reversed(records):  # insertion order must not matter
        await store.create_session(record)
    newest_first = [r.id for r in reversed(records)]

    everything = await store.list_sessions(limit=10, before=None, owner=None)
    assert [r.id for r in everything] == newest_first

    listed: list[str] = []
    cursor: SessionCursor | None = None
    while True:
        page = await store.list_sessions(limit=2, before=cursor, owner=None)
        listed += [r.id for r in page]
        if len(page) < 2:
            break
        cursor = SessionCursor(created_at=page[-1].created_at, id=page[-1].id)
    assert listed == newest_first


async def test_sessions_made_at_the_same_instant_page_by_id(store: SqliteStore) -> None:
    low, high = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    await store.create_session(session_record(session_id=low))
    await store.create_session(session_record(session_id=high))
    assert [r.id for r in await store.list_sessions(limit=5, before=None, owner=None)] == [
        high,
        low,
    ]
    after_high = await store.list_sessions(
        limit=5, before=SessionCursor(created_at=T0, id=high), owner=None
    )
    assert [r.id for r in after_high] == [low]


async def test_sessions_list_filters_by_owner(store: SqliteStore) -> None:
    owners = ["alice", "bob", None, "alice", "bob"]
    records = [
        session_record(at=T0 + timedelta(seconds=i), owner=owner) for i, owner in enumerate(owners)
    ]
    for record in records:
        await store.create_session(record)
    alice = await store.list_sessions(limit=10, before=None, owner="alice")
    assert [r.id for r in alice] == [records[3].id, records[0].id]
    first = await store.list_sessions(limit=1, before=None, owner="bob")
    cursor = SessionCursor(created_at=first[0].created_at, id=first[0].id)
    rest = await store.list_sessions(limit=10, before=cursor, owner="bob")
    assert [r.id for r in first + rest] == [records[4].id, records[1].id]
    assert len(await store.list_sessions(limit=10, before=None, owner=None)) == 5


async def test_set_title(store: SqliteStore) -> None:
    record = session_record()
    await store.create_session(record)
    await store.set_title(record.id, "Alpha planning")
    fetched = await store.get_session(record.id)
    assert fetched is not None
    assert fetched.title == "Alpha planning"


# ---------------------------------------------------------------- events


async def test_append_events_is_idempotent_per_session_and_seq(
    store: SqliteStore, db_path: str
) -> None:
    record = session_record()
    await store.create_session(record)
    await store.append_events(rows_of(record.id, user_message(1, "hi"), assistant_message(2, "yo")))
    await store.append_events(rows_of(record.id, assistant_message(2, "a different text")))

    count = "select count(*) from session_events where session_id = ?"
    assert raw_count(db_path, count, record.id) == 2
    events = await store.list_events(record.id, after_seq=0, limit=None)
    assert events == [user_message(1, "hi"), assistant_message(2, "yo")]
    fetched = await store.get_session(record.id)
    assert fetched is not None
    assert fetched.event_count == 2
    assert fetched.updated_at == assistant_message(2, "yo").created_at
    assert await store.last_seq(record.id) == 2


async def test_event_count_and_updated_at_follow_the_latest_event(store: SqliteStore) -> None:
    record = session_record()
    await store.create_session(record)
    assert await store.last_seq(record.id) == 0

    await store.append_events(rows_of(record.id, user_message(1, "one")))
    after_one = await store.get_session(record.id)
    assert after_one is not None
    assert (after_one.event_count, after_one.updated_at) == (1, user_message(1, "").created_at)

    call = ToolCallEvent(
        seq=2,
        created_at=T0 + timedelta(seconds=2),
        response_id="resp-3",
        call_id="call-1",
        name="calculate",
        arguments={"expression": "1+1"},
    )
    result = ToolResultEvent(
        seq=3,
        created_at=T0 + timedelta(seconds=3),
        response_id="resp-3",
        call_id="call-1",
        name="calculate",
        ok=True,
        result=2,
    )
    await store.append_events(rows_of(record.id, call, result, assistant_message(4, "two")))
    after_four = await store.get_session(record.id)
    assert after_four is not None
    assert after_four.event_count == 4
    assert after_four.updated_at == assistant_message(4, "").created_at
    assert after_four.created_at == record.created_at
    assert await store.list_events(record.id, after_seq=1, limit=2) == [call, result]


async def test_one_batch_may_hold_several_sessions(store: SqliteStore) -> None:
    first, second = session_record(), session_record()
    await store.create_session(first)
    await store.create_session(second)
    await store.append_events(
        [
            EventRow(first.id, user_message(1, "a")),
            EventRow(second.id, user_message(1, "b")),
            EventRow(first.id, assistant_message(2, "c")),
        ]
    )
    counts = [(await store.get_session(r.id)) for r in (first, second)]
    assert [r.event_count if r else None for r in counts] == [2, 1]
    assert await store.list_events(second.id, after_seq=0, limit=None) == [user_message(1, "b")]


async def test_events_of_an_unknown_session_are_refused(store: SqliteStore, db_path: str) -> None:
    with pytest.raises(StoreError):
        await store.append_events(rows_of(str(uuid.uuid4()), user_message(1, "orphan")))
    assert raw_count(db_path, "select count(*) from session_events") == 0


async def test_list_events_oldest_first_after_seq_and_limit(store: SqliteStore) -> None:
    record = session_record()
    await store.create_session(record)
    events: list[StoredEvent] = []
    for seq in range(1, 7):
        events.append(user_message(seq, f"u{seq}") if seq % 2 else assistant_message(seq, "a"))
    # Written newest first, in two batches: reads still come back in seq order.
    await store.append_events(rows_of(record.id, *events[3:][::-1]))
    await store.append_events(rows_of(record.id, *events[:3][::-1]))

    assert await store.list_events(record.id, after_seq=0, limit=None) == events
    assert [e.seq for e in await store.list_events(record.id, after_seq=2, limit=3)] == [3, 4, 5]
    assert [e.seq for e in await store.list_events(record.id, after_seq=5, limit=10)] == [6]
    assert await store.list_events(record.id, after_seq=6, limit=None) == []
    assert await store.list_events(str(uuid.uuid4()), after_seq=0, limit=None) == []


async def test_find_user_message_by_its_id(store: SqliteStore) -> None:
    record, other = session_record(), session_record()
    await store.create_session(record)
    await store.create_session(other)
    message = user_message(1, "find me", message_id="client-42")
    await store.append_events(rows_of(record.id, message, assistant_message(2, "answer")))

    assert await store.find_user_message(record.id, "client-42") == message
    assert await store.find_user_message(record.id, "client-43") is None
    assert await store.find_user_message(record.id, "resp-2") is None
    assert await store.find_user_message(other.id, "client-42") is None


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


# ---------------------------------------------------------------- summaries


async def test_summary_status_and_save_summary(store: SqliteStore) -> None:
    record = session_record()
    await store.create_session(record)
    fresh = await store.get_session(record.id)
    assert fresh is not None
    assert (fresh.summary_status, fresh.summary, fresh.summary_seq) == (SummaryStatus.NONE, None, 0)

    await store.set_summary_status(record.id, SummaryStatus.RUNNING)
    running = await store.get_session(record.id)
    assert running is not None
    assert running.summary_status is SummaryStatus.RUNNING

    await store.save_summary(record.id, summary="They talked.", summary_seq=7)
    done = await store.get_session(record.id)
    assert done is not None
    assert (done.summary_status, done.summary, done.summary_seq) == (
        SummaryStatus.DONE,
        "They talked.",
        7,
    )


async def test_sessions_with_summary_status_finds_only_those(store: SqliteStore) -> None:
    statuses = [
        SummaryStatus.NONE,
        SummaryStatus.PENDING,
        SummaryStatus.RUNNING,
        SummaryStatus.DONE,
        SummaryStatus.FAILED,
        SummaryStatus.PENDING,
    ]
    records = [session_record(at=T0 + timedelta(seconds=i)) for i in range(len(statuses))]
    for record, status in zip(records, statuses, strict=True):
        await store.create_session(record)
        await store.set_summary_status(record.id, status)

    todo = await store.sessions_with_summary_status([SummaryStatus.PENDING, SummaryStatus.RUNNING])
    assert sorted(todo) == sorted([records[1].id, records[2].id, records[5].id])
    assert await store.sessions_with_summary_status([SummaryStatus.FAILED]) == [records[4].id]
    assert await store.sessions_with_summary_status([SummaryStatus.DONE]) == [records[3].id]


# ---------------------------------------------------------------- profiles, schema, ping


async def test_user_profiles_upsert_and_get(store: SqliteStore) -> None:
    assert await store.get_user_profile("7") is None
    await store.upsert_user_profiles(
        {"7": {"name": "Grace", "tags": ["navy", "cobol"]}, "8": {"name": "Alan"}}
    )
    assert await store.get_user_profile("7") == {"name": "Grace", "tags": ["navy", "cobol"]}
    await store.upsert_user_profiles({"7": {"name": "Grace Hopper", "rank": 3}})
    assert await store.get_user_profile("7") == {"name": "Grace Hopper", "rank": 3}
    assert await store.get_user_profile("8") == {"name": "Alan"}


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


async def test_ping_answers_on_an_open_store(store: SqliteStore) -> None:
    await store.ping()
    await store.ping()


async def test_ping_of_a_closed_store_raises_store_error(db_path: str) -> None:
    closed = SqliteStore(db_path)
    with pytest.raises(StoreError):
        await closed.ping()
