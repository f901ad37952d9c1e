"""One contract, three stores: the same cases on SQLite, PostgreSQL and Supabase (fake PostgREST).

PostgreSQL runs on a throwaway database per module; Supabase on the fake REST API over another
one that holds `schema.sql`, so the schema's trigger keeps `event_count` exactly as it would there.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from app.database.base import (
    EventRow,
    LeaseState,
    SessionCursor,
    SessionRecord,
    Store,
    StoreError,
)
from app.database.postgres import PostgresStore
from app.database.sqlite import SqliteStore
from app.database.supabase import INSERT_ROWS, PAGE_ROWS, SupabaseStore
from app.protocol import (
    StoredEvent,
    SummaryStatus,
)
from tests.database.builders import (
    T0,
    assistant_message,
    rows_of,
    session_record,
    tool_call,
    tool_result,
    user_message,
)
from tests.database.conftest import clear_tables
from tests.fakes.postgrest_server import FakePostgrest

KINDS = ["sqlite", "postgresql", "supabase"]


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, empty store of each kind."""
    opened: Store
    if request.param == "sqlite":
        opened = SqliteStore(str(tmp_path / "store.db"))
    elif request.param == "postgresql":
        dsn: str = request.getfixturevalue("pg_database")
        opened = PostgresStore(dsn, pool_min=1, pool_max=4)
    else:
        fake: FakePostgrest = request.getfixturevalue("fake_postgrest")
        opened = SupabaseStore(fake.url, fake.key, timeout_s=5)
    await opened.open()
    if request.param == "postgresql":
        await clear_tables(dsn)
    yield opened
    await opened.close()


async def created(store: Store, **options: object) -> SessionRecord:
    record = session_record(**options)  # type: ignore[arg-type]
    await store.create_session(record)
    return record


async def fetched(store: Store, session_id: str) -> SessionRecord:
    record = await store.get_session(session_id)
    assert record is not None
    return record


# ---------------------------------------------------------------- sessions


async def test_a_created_session_reads_back_equal(store: Store) -> None:
    record = await created(store, owner="alice")
    assert await store.get_session(record.id) == record
    assert await store.get_session(str(uuid.uuid4())) is None
    assert await store.get_session("not-a-uuid") is None


async def test_sessions_list_newest_first_and_page_with_a_cursor(store: Store) -> None:
    records = [session_record(at=T0 + timedelta(minutes=i)) for i in range(5)]
    for record in reversed(records):
        await store.create_session(record)
    newest_first = [r.id for r in reversed(records)]
    assert [r.id for r in await store.list_sessions(limit=10, before=None, owner=None)] == (
        newest_first
    )
    listed: list[str] = []
    cursor: SessionCursor | None = None
    while True:
        page = await store.list_sessions(limit=2, before=cursor, owner=None)
        listed += [r.id for r in page]
        if len(page) < 2:
            break
        cursor = SessionCursor(created_at=page[-1].created_at, id=page[-1].id)
    assert listed == newest_first


async def test_sessions_made_at_the_same_instant_page_by_id(store: Store) -> None:
    low, high = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    await created(store, session_id=low)
    await created(store, session_id=high)
    everything = await store.list_sessions(limit=5, before=None, owner=None)
    assert [r.id for r in everything] == [high, low]
    after_high = await store.list_sessions(
        limit=5, before=SessionCursor(created_at=T0, id=high), owner=None
    )
    assert [r.id for r in after_high] == [low]


async def test_sessions_list_filters_by_owner(store: Store) -> None:
    owners = ["alice", "bob", None, "alice", "bob"]
    records = [
        await created(store, at=T0 + timedelta(seconds=i), owner=owner)
        for i, owner in enumerate(owners)
    ]
    alice = await store.list_sessions(limit=10, before=None, owner="alice")
    assert [r.id for r in alice] == [records[3].id, records[0].id]
    first = await store.list_sessions(limit=1, before=None, owner="bob")
    cursor = SessionCursor(created_at=first[0].created_at, id=first[0].id)
    rest = await store.list_sessions(limit=10, before=cursor, owner="bob")
    assert [r.id for r in first + rest] == [records[4].id, records[1].id]
    assert len(await store.list_sessions(limit=10, before=None, owner=None)) == 5


async def test_title_and_context_summary(store: Store) -> None:
    record = await created(store)
    await store.set_title(record.id, "Alpha planning")
    await store.save_context_summary(record.id, summary="So far: plans.", upto_seq=12)
    after = await fetched(store, record.id)
    assert (after.title, after.context_summary, after.context_summary_seq) == (
        "Alpha planning",
        "So far: plans.",
        12,
    )


async def test_delete_session_removes_its_events(store: Store) -> None:
    doomed, kept = await created(store), await created(store)
    await store.append_events(rows_of(doomed.id, user_message(1, "x"), assistant_message(2, "y")))
    await store.append_events(rows_of(kept.id, user_message(1, "z")))
    assert await store.delete_session(doomed.id) is True
    assert await store.get_session(doomed.id) is None
    assert await store.list_events(doomed.id, after_seq=0, limit=None) == []
    assert await store.last_seq(doomed.id) == 0
    assert await store.list_events(kept.id, after_seq=0, limit=None) == [user_message(1, "z")]
    assert await store.delete_session(doomed.id) is False
    assert await store.delete_session("not-a-uuid") is False


# ---------------------------------------------------------------- events


async def test_append_events_is_idempotent_per_session_and_seq(store: Store) -> None:
    record = await created(store)
    await store.append_events(rows_of(record.id, user_message(1, "hi"), assistant_message(2, "yo")))
    await store.append_events(rows_of(record.id, assistant_message(2, "a different text")))
    events = await store.list_events(record.id, after_seq=0, limit=None)
    assert events == [user_message(1, "hi"), assistant_message(2, "yo")]
    after = await fetched(store, record.id)
    assert (after.event_count, after.updated_at) == (2, assistant_message(2, "").created_at)
    assert await store.last_seq(record.id) == 2


async def test_event_count_and_updated_at_follow_the_latest_event(store: Store) -> None:
    record = await created(store)
    assert await store.last_seq(record.id) == 0
    await store.append_events(rows_of(record.id, user_message(1, "one")))
    after_one = await fetched(store, record.id)
    assert (after_one.event_count, after_one.updated_at) == (1, user_message(1, "").created_at)

    # Written out of order in one batch: the newest event still wins.
    await store.append_events(
        rows_of(record.id, assistant_message(4, "two"), tool_call(2), tool_result(3))
    )
    after_four = await fetched(store, record.id)
    assert after_four.event_count == 4
    assert after_four.updated_at == assistant_message(4, "").created_at
    assert after_four.created_at == record.created_at
    assert await store.list_events(record.id, after_seq=1, limit=2) == [
        tool_call(2),
        tool_result(3),
    ]


async def test_one_batch_may_hold_several_sessions(store: Store) -> None:
    first, second = await created(store), await created(store)
    await store.append_events(
        [
            EventRow(first.id, user_message(1, "a")),
            EventRow(second.id, user_message(1, "b")),
            EventRow(first.id, assistant_message(2, "c")),
        ]
    )
    counts = [(await fetched(store, r.id)).event_count for r in (first, second)]
    assert counts == [2, 1]
    assert await store.list_events(second.id, after_seq=0, limit=None) == [user_message(1, "b")]


async def test_events_of_an_unknown_session_are_refused_and_not_retryable(store: Store) -> None:
    orphan = str(uuid.uuid4())
    with pytest.raises(StoreError):
        await store.append_events(rows_of(orphan, user_message(1, "orphan")))
    assert await store.list_events(orphan, after_seq=0, limit=None) == []


async def test_list_events_oldest_first_after_seq_and_limit(store: Store) -> None:
    record = await created(store)
    events: list[StoredEvent] = [
        user_message(seq, f"u{seq}") if seq % 2 else assistant_message(seq, "a")
        for seq in range(1, 7)
    ]
    await store.append_events(rows_of(record.id, *events[3:][::-1]))
    await store.append_events(rows_of(record.id, *events[:3][::-1]))
    assert await store.list_events(record.id, after_seq=0, limit=None) == events
    assert [e.seq for e in await store.list_events(record.id, after_seq=2, limit=3)] == [3, 4, 5]
    assert [e.seq for e in await store.list_events(record.id, after_seq=5, limit=10)] == [6]
    assert await store.list_events(record.id, after_seq=6, limit=None) == []
    assert await store.list_events(str(uuid.uuid4()), after_seq=0, limit=None) == []
    assert await store.list_events("not-a-uuid", after_seq=0, limit=None) == []


async def test_a_long_session_reads_back_whole_across_pages(store: Store) -> None:
    # More than one REST page and more than one REST insert: paging by seq must not skip or repeat.
    count = max(PAGE_ROWS, INSERT_ROWS) + 150
    record = await created(store)
    events = [user_message(seq, f"m{seq}") for seq in range(1, count + 1)]
    await store.append_events(rows_of(record.id, *events))
    await store.append_events(rows_of(record.id, *events[-600:]))  # a big batch, again: no-op
    read = await store.list_events(record.id, after_seq=0, limit=None)
    assert [e.seq for e in read] == list(range(1, count + 1))
    assert [e.seq for e in await store.list_events(record.id, after_seq=10, limit=1005)] == list(
        range(11, 1016)
    )
    assert (await fetched(store, record.id)).event_count == count


async def test_find_user_message_by_its_id(store: Store) -> None:
    record, other = await created(store), await created(store)
    message = user_message(1, "find me", message_id="client-42")
    await store.append_events(rows_of(record.id, message, assistant_message(2, "answer")))
    assert await store.find_user_message(record.id, "client-42") == message
    assert await store.find_user_message(record.id, "client-43") is None
    assert await store.find_user_message(record.id, "resp-2") is None
    assert await store.find_user_message(other.id, "client-42") is None


async def test_text_survives_exactly(store: Store) -> None:
    record = await created(store)
    text = 'quotes " \\ backslash, emoji 🎉, newline\n, tab\t, <b>html</b> and ünïcode'
    await store.append_events(rows_of(record.id, user_message(1, text)))
    assert await store.list_events(record.id, after_seq=0, limit=None) == [user_message(1, text)]


# ---------------------------------------------------------------- summaries, profiles, ping


async def test_summary_status_and_save_summary(store: Store) -> None:
    record = await created(store)
    fresh = await fetched(store, record.id)
    assert (fresh.summary_status, fresh.summary, fresh.summary_seq) == (SummaryStatus.NONE, None, 0)
    await store.set_summary_status(record.id, SummaryStatus.RUNNING)
    assert (await fetched(store, record.id)).summary_status is SummaryStatus.RUNNING
    await store.save_summary(record.id, summary="They talked.", summary_seq=7)
    done = await fetched(store, record.id)
    assert (done.summary_status, done.summary, done.summary_seq) == (
        SummaryStatus.DONE,
        "They talked.",
        7,
    )


async def test_sessions_with_summary_status_finds_only_those(store: Store) -> None:
    statuses = [
        SummaryStatus.NONE,
        SummaryStatus.PENDING,
        SummaryStatus.RUNNING,
        SummaryStatus.DONE,
        SummaryStatus.FAILED,
        SummaryStatus.PENDING,
    ]
    records = [await created(store, at=T0 + timedelta(seconds=i)) for i in range(len(statuses))]
    for record, status in zip(records, statuses, strict=True):
        await store.set_summary_status(record.id, status)
    todo = await store.sessions_with_summary_status([SummaryStatus.PENDING, SummaryStatus.RUNNING])
    assert sorted(todo) == sorted([records[1].id, records[2].id, records[5].id])
    assert await store.sessions_with_summary_status([SummaryStatus.FAILED]) == [records[4].id]


async def test_sessions_with_unsummarized_events(store: Store) -> None:
    behind, summarized, pending, quiet, failed = [
        await created(store, at=T0 + timedelta(seconds=i)) for i in range(5)
    ]
    for record in (behind, summarized, pending, failed):
        await store.append_events(
            rows_of(record.id, user_message(1, "q"), assistant_message(2, "a"))
        )
    await store.save_summary(summarized.id, summary="done", summary_seq=2)
    await store.set_summary_status(pending.id, SummaryStatus.PENDING)
    await store.set_summary_status(failed.id, SummaryStatus.FAILED)
    assert await store.sessions_with_unsummarized_events() == [behind.id]
    # A summary that covers only part of the session is behind again once more events arrive.
    await store.append_events(rows_of(summarized.id, user_message(3, "more")))
    assert await store.sessions_with_unsummarized_events() == [behind.id, summarized.id]
    assert quiet.id not in await store.sessions_with_unsummarized_events()


async def test_user_profiles_upsert_and_get(store: Store) -> None:
    assert await store.get_user_profile("7") is None
    await store.upsert_user_profiles(
        {"7": {"name": "Grace", "tags": ["navy", "cobol"]}, "8": {"name": "Alan"}}
    )
    assert await store.get_user_profile("7") == {"name": "Grace", "tags": ["navy", "cobol"]}
    await store.upsert_user_profiles({"7": {"name": "Grace Hopper", "rank": 3}})
    assert await store.get_user_profile("7") == {"name": "Grace Hopper", "rank": 3}
    assert await store.get_user_profile("8") == {"name": "Alan"}


async def test_ping_answers_on_an_open_store_and_not_on_a_closed_one(store: Store) -> None:
    await store.ping()
    await store.close()
    with pytest.raises(StoreError):
        await store.ping()


async def test_a_session_lease_has_one_holder_until_released_or_expired(store: Store) -> None:
    record = session_record()
    await store.create_session(record)
    assert await store.acquire_lease(record.id, holder="a", ttl_s=30) is None
    assert await store.acquire_lease(record.id, holder="a", ttl_s=30) is None  # ours again
    assert await store.acquire_lease(record.id, holder="b", ttl_s=30) is LeaseState.LIVE
    await store.mark_lease_closing(record.id, holder="b")  # not b's: no effect
    assert await store.acquire_lease(record.id, holder="b", ttl_s=30) is LeaseState.LIVE
    await store.mark_lease_closing(record.id, holder="a")
    assert await store.acquire_lease(record.id, holder="b", ttl_s=30) is LeaseState.CLOSING
    assert await store.renew_leases([record.id], holder="b", ttl_s=30) == set()
    assert await store.renew_leases([record.id], holder="a", ttl_s=-1) == {record.id}
    # Renewed into the past: expired, as if its instance had died.
    assert await store.acquire_lease(record.id, holder="b", ttl_s=30) is None
    await store.release_lease(record.id, holder="a")  # no longer a's: no effect
    assert await store.acquire_lease(record.id, holder="a", ttl_s=30) is LeaseState.LIVE
    await store.release_lease(record.id, holder="b")
    assert await store.acquire_lease(record.id, holder="a", ttl_s=30) is None


async def test_a_leased_session_is_not_taken_for_unsummarized(store: Store) -> None:
    record = session_record()
    await store.create_session(record)
    await store.append_events([EventRow(record.id, user_message(1, "hi"))])
    await store.acquire_lease(record.id, holder="a", ttl_s=30)
    assert await store.sessions_with_unsummarized_events() == []
    await store.release_lease(record.id, holder="a")
    assert await store.sessions_with_unsummarized_events() == [record.id]


async def test_a_summary_is_claimed_once_unless_the_claim_is_stale(store: Store) -> None:
    record = session_record()
    await store.create_session(record)
    assert not await store.claim_summary(record.id, stale_after_s=60)  # nothing pending
    await store.set_summary_status(record.id, SummaryStatus.PENDING)
    assert await store.claim_summary(record.id, stale_after_s=60)
    assert not await store.claim_summary(record.id, stale_after_s=60)
    assert (await fetched(store, record.id)).summary_status is SummaryStatus.RUNNING
    # A claim older than the bound was left by a dead instance: it can be taken over.
    assert await store.claim_summary(record.id, stale_after_s=-1)


async def test_a_title_is_claimed_once_and_stale_claims_are_listed(store: Store) -> None:
    record = session_record()
    await store.create_session(record)
    assert await store.claim_title(record.id, stale_after_s=60)
    assert not await store.claim_title(record.id, stale_after_s=60)
    assert await store.sessions_with_stale_titles(stale_after_s=60) == []
    assert await store.sessions_with_stale_titles(stale_after_s=-1) == [record.id]
    await store.set_title(record.id, "Named")
    assert not await store.claim_title(record.id, stale_after_s=-1)
    assert await store.sessions_with_stale_titles(stale_after_s=-1) == []
