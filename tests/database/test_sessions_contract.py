"""The session repository's contract, on SQLite, PostgreSQL and Supabase (fake PostgREST)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from app.database.base import SessionCursor, SessionRecord, Store, StoreError
from app.protocol import SummaryStatus
from tests.database.builders import (
    HOLDER,
    T0,
    assistant_message,
    created,
    leased,
    leased_session,
    rows_of,
    session_record,
    user_message,
)


async def fetched(store: Store, session_id: str) -> SessionRecord:
    record = await store.sessions.get(session_id)
    assert record is not None
    return record


async def ids_listed(
    store: Store, *, limit: int = 10, before: SessionCursor | None = None, owner: str | None = None
) -> list[str]:
    return [r.id for r in await store.sessions.list(limit=limit, before=before, owner=owner)]


def cursor_after(record: SessionRecord) -> SessionCursor:
    return SessionCursor(created_at=record.created_at, id=record.id)


# ---------------------------------------------------------------- create and get


async def test_a_created_session_reads_back_equal_and_not_live(store: Store) -> None:
    record = await created(store, owner="alice")
    assert record.live is False
    assert await store.sessions.get(record.id) == record


async def test_every_field_given_at_creation_reads_back(store: Store) -> None:
    record = replace(
        session_record(owner="bob"),
        updated_at=T0 + timedelta(hours=1),
        model="llama-3.3-70b",
        title="Über “quotes” 🎉",
        summary="They talked.",
        summary_status=SummaryStatus.DONE,
        summary_seq=7,
        event_count=7,
        context_summary="So far: plans.",
        context_summary_seq=5,
    )
    await store.sessions.create(record)
    assert await store.sessions.get(record.id) == record


async def test_unknown_and_malformed_ids_name_no_session(store: Store) -> None:
    await created(store)
    assert await store.sessions.get(str(uuid.uuid4())) is None
    assert await store.sessions.get("not-a-uuid") is None
    assert await store.sessions.get("") is None


async def test_a_session_id_must_be_a_uuid(store: Store) -> None:
    with pytest.raises(StoreError) as caught:
        await store.sessions.create(session_record(session_id="not-a-uuid"))
    assert caught.value.retryable is False
    assert await ids_listed(store) == []


# ---------------------------------------------------------------- list


async def test_sessions_list_newest_first_and_page_with_a_cursor(store: Store) -> None:
    records = [session_record(at=T0 + timedelta(minutes=i)) for i in range(5)]
    for record in reversed(records):  # creation order is not listing order
        await store.sessions.create(record)
    newest_first = [r.id for r in reversed(records)]
    assert await ids_listed(store) == newest_first
    listed: list[str] = []
    cursor: SessionCursor | None = None
    while True:
        page = await store.sessions.list(limit=2, before=cursor, owner=None)
        listed += [r.id for r in page]
        if len(page) < 2:
            break
        cursor = cursor_after(page[-1])
    assert listed == newest_first


async def test_sessions_made_at_the_same_instant_page_by_id(store: Store) -> None:
    low, high = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    await created(store, session_id=low)
    await created(store, session_id=high)
    assert await ids_listed(store) == [high, low]
    assert await ids_listed(store, before=SessionCursor(created_at=T0, id=high)) == [low]
    assert await ids_listed(store, before=SessionCursor(created_at=T0, id=low)) == []


async def test_sessions_list_filters_by_owner(store: Store) -> None:
    owners = ["alice", "bob", None, "alice", "bob"]
    records = [
        await created(store, at=T0 + timedelta(seconds=i), owner=owner)
        for i, owner in enumerate(owners)
    ]
    assert await ids_listed(store, owner="alice") == [records[3].id, records[0].id]
    first = await store.sessions.list(limit=1, before=None, owner="bob")
    rest = await ids_listed(store, before=cursor_after(first[0]), owner="bob")
    assert [first[0].id, *rest] == [records[4].id, records[1].id]
    assert await ids_listed(store, owner="carol") == []
    assert len(await ids_listed(store)) == 5


async def test_a_malformed_cursor_lists_nothing(store: Store) -> None:
    await created(store)
    assert await ids_listed(store, before=SessionCursor(created_at=T0, id="nope")) == []


# ---------------------------------------------------------------- delete


async def test_delete_removes_the_session_its_events_and_its_lease(store: Store) -> None:
    (doomed, lease), (kept, kept_lease) = await leased_session(store), await leased_session(store)
    await store.events.append(rows_of(lease, user_message(1, "x"), assistant_message(2, "y")))
    await store.events.append(rows_of(kept_lease, user_message(1, "z")))
    assert await store.sessions.delete(doomed.id) is True
    assert await store.sessions.get(doomed.id) is None
    assert await store.events.read(doomed.id) == []
    assert await ids_listed(store) == [kept.id]
    # Only the kept session's lease is left to free.
    assert await store.leases.release_holder(HOLDER) == 1
    assert await store.events.read(kept.id) == [user_message(1, "z")]


async def test_a_session_made_again_under_a_deleted_id_starts_without_a_lease(
    store: Store,
) -> None:
    record = await created(store)
    await leased(store, record.id, holder="gone")
    await store.sessions.delete(record.id)
    await store.sessions.create(record)
    assert (await leased(store, record.id, holder="next")).epoch == 1


async def test_delete_of_an_unknown_or_malformed_session_is_false(store: Store) -> None:
    record = await created(store)
    assert await store.sessions.delete(str(uuid.uuid4())) is False
    assert await store.sessions.delete("not-a-uuid") is False
    assert await store.sessions.delete(record.id) is True
    assert await store.sessions.delete(record.id) is False


# ---------------------------------------------------------------- context summary


async def test_a_context_summary_is_stored_with_the_seq_it_covers(store: Store) -> None:
    record = await created(store)
    await store.sessions.save_context_summary(record.id, summary="So far: plans.", upto_seq=12)
    after = await fetched(store, record.id)
    assert (after.context_summary, after.context_summary_seq) == ("So far: plans.", 12)


async def test_a_context_summary_never_moves_backwards(store: Store) -> None:
    record = await created(store)
    await store.sessions.save_context_summary(record.id, summary="up to 12", upto_seq=12)
    await store.sessions.save_context_summary(record.id, summary="up to 5", upto_seq=5)
    after_older = await fetched(store, record.id)
    assert (after_older.context_summary, after_older.context_summary_seq) == ("up to 12", 12)
    await store.sessions.save_context_summary(record.id, summary="up to 20", upto_seq=20)
    after_newer = await fetched(store, record.id)
    assert (after_newer.context_summary, after_newer.context_summary_seq) == ("up to 20", 20)


async def test_a_context_summary_changes_no_other_field(store: Store) -> None:
    record = await created(store, owner="alice")
    await store.sessions.save_context_summary(record.id, summary="s", upto_seq=3)
    assert await fetched(store, record.id) == replace(
        record, context_summary="s", context_summary_seq=3
    )


async def test_a_context_summary_of_an_unknown_or_malformed_session_is_ignored(
    store: Store,
) -> None:
    await store.sessions.save_context_summary(str(uuid.uuid4()), summary="s", upto_seq=1)
    await store.sessions.save_context_summary("not-a-uuid", summary="s", upto_seq=1)
    assert await ids_listed(store) == []
