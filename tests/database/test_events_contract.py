"""The event log's contract, on SQLite, PostgreSQL and Supabase (fake PostgREST over PostgreSQL).

Appends are fenced (only the session's current holding writes), atomic (a batch is stored whole
or not at all), idempotent (an identical retry is skipped) and never silently lossy (a different
event at a stored seq is `EventConflict`).
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from app.database.base import EventConflict, EventRow, Lease, LeaseLost, Store
from app.database.supabase import INSERT_ROWS, PAGE_ROWS
from app.protocol import StoredEvent
from tests.database.builders import (
    assistant_message,
    created,
    leased,
    leased_session,
    rows_of,
    tool_call,
    tool_result,
    user_message,
)


async def test_events_read_back_oldest_first_after_seq_and_limit(store: Store) -> None:
    record, lease = await leased_session(store)
    events: list[StoredEvent] = [
        user_message(seq, f"u{seq}") if seq % 2 else assistant_message(seq, "a")
        for seq in range(1, 7)
    ]
    await store.events.append(rows_of(lease, *events[3:][::-1]))
    await store.events.append(rows_of(lease, *events[:3][::-1]))
    assert await store.events.read(record.id) == events
    assert [e.seq for e in await store.events.read(record.id, after_seq=2, limit=3)] == [3, 4, 5]
    assert [e.seq for e in await store.events.read(record.id, after_seq=5, limit=10)] == [6]
    assert await store.events.read(record.id, after_seq=6) == []
    assert await store.events.read(str(uuid.uuid4())) == []
    assert await store.events.read("not-a-uuid") == []


async def test_event_count_and_updated_at_follow_the_latest_event(store: Store) -> None:
    record, lease = await leased_session(store)
    await store.events.append(rows_of(lease, user_message(1, "one")))
    after_one = await store.sessions.get(record.id)
    assert after_one is not None
    assert (after_one.event_count, after_one.updated_at) == (1, user_message(1, "").created_at)
    # Written out of order in one batch: the newest event still wins.
    await store.events.append(
        rows_of(lease, assistant_message(4, "two"), tool_call(2), tool_result(3))
    )
    after_four = await store.sessions.get(record.id)
    assert after_four is not None
    assert (after_four.event_count, after_four.updated_at) == (
        4,
        assistant_message(4, "").created_at,
    )
    assert after_four.created_at == record.created_at


async def test_an_identical_retry_is_skipped(store: Store) -> None:
    record, lease = await leased_session(store)
    batch = rows_of(lease, user_message(1, "hi"), assistant_message(2, "yo"))
    await store.events.append(batch)
    await store.events.append(batch)  # the writer's retry after an answer it did not see
    await store.events.append([*batch, *rows_of(lease, user_message(3, "more"))])
    assert await store.events.read(record.id) == [
        user_message(1, "hi"),
        assistant_message(2, "yo"),
        user_message(3, "more"),
    ]
    assert (await store.sessions.get(record.id)).event_count == 3  # type: ignore[union-attr]


async def test_a_different_event_at_a_stored_seq_is_a_conflict_and_stores_nothing(
    store: Store,
) -> None:
    record, lease = await leased_session(store)
    await store.events.append(rows_of(lease, user_message(1, "hi"), assistant_message(2, "yo")))
    with pytest.raises(EventConflict) as caught:
        # The new seq 3 must not be stored either: a batch is stored whole or not at all.
        await store.events.append(
            rows_of(lease, user_message(3, "new"), assistant_message(2, "a different text"))
        )
    assert caught.value.retryable is False
    assert [e.seq for e in await store.events.read(record.id)] == [1, 2]
    assert (await store.events.read(record.id))[1] == assistant_message(2, "yo")


async def test_a_message_id_stored_at_another_seq_is_a_conflict(store: Store) -> None:
    record, lease = await leased_session(store)
    await store.events.append(rows_of(lease, user_message(1, "a", message_id="same")))
    with pytest.raises(EventConflict):
        await store.events.append(rows_of(lease, user_message(2, "b", message_id="same")))
    assert [e.seq for e in await store.events.read(record.id)] == [1]


async def test_a_writer_without_the_lease_is_refused(store: Store) -> None:
    record = await created(store)
    stranger = Lease(record.id, "instance-x", 1)
    with pytest.raises(LeaseLost) as caught:
        await store.events.append(rows_of(stranger, user_message(1, "not mine")))
    assert caught.value.retryable is False
    assert await store.events.read(record.id) == []


async def test_events_of_a_session_that_never_existed_are_refused(store: Store) -> None:
    orphan = Lease(str(uuid.uuid4()), "instance-a", 1)
    with pytest.raises(LeaseLost) as caught:
        await store.events.append(rows_of(orphan, user_message(1, "orphan")))
    assert caught.value.retryable is False
    assert await store.events.read(orphan.session_id) == []


async def test_a_holding_that_ended_cannot_write_even_on_the_same_instance(store: Store) -> None:
    record, first = await leased_session(store)
    await store.events.append(rows_of(first, user_message(1, "one")))
    await store.leases.release(first)
    second = await leased(store, record.id)  # same holder, next epoch
    assert second.epoch > first.epoch
    with pytest.raises(LeaseLost):
        await store.events.append(rows_of(first, assistant_message(2, "late, from the old one")))
    await store.events.append(rows_of(second, assistant_message(2, "the new one's")))
    assert await store.events.read(record.id) == [
        user_message(1, "one"),
        assistant_message(2, "the new one's"),
    ]


async def test_a_writer_whose_lease_expired_and_was_taken_over_is_refused(store: Store) -> None:
    record, old = await leased_session(store)
    await store.leases.renew([old], ttl_s=-1)  # its instance stopped renewing: expired
    new = await leased(store, record.id, holder="instance-b")
    with pytest.raises(LeaseLost):
        await store.events.append(rows_of(old, user_message(1, "from the dead")))
    await store.events.append(rows_of(new, user_message(1, "from the living")))
    assert await store.events.read(record.id) == [user_message(1, "from the living")]


async def test_an_expired_lease_nobody_took_still_writes(store: Store) -> None:
    record, lease = await leased_session(store)
    await store.leases.renew([lease], ttl_s=-1)
    await store.events.append(rows_of(lease, user_message(1, "still mine")))
    assert await store.events.read(record.id) == [user_message(1, "still mine")]


async def test_an_identical_replay_after_the_release_is_skipped_not_refused(
    store: Store,
) -> None:
    record, lease = await leased_session(store)
    batch = rows_of(lease, user_message(1, "hi"), assistant_message(2, "yo"))
    await store.events.append(batch)
    await store.leases.release(lease)
    await store.events.append(batch)  # a spill file replayed twice, say
    with pytest.raises(LeaseLost):
        await store.events.append([*batch, *rows_of(lease, user_message(3, "new"))])
    assert [e.seq for e in await store.events.read(record.id)] == [1, 2]


async def test_events_of_a_deleted_session_are_refused(store: Store) -> None:
    record, lease = await leased_session(store)
    await store.events.append(rows_of(lease, user_message(1, "hi")))
    assert await store.sessions.delete(record.id)
    with pytest.raises(LeaseLost):
        await store.events.append(rows_of(lease, assistant_message(2, "too late")))
    assert await store.events.read(record.id) == []


async def test_one_batch_may_hold_several_sessions_and_a_refusal_stores_none(
    store: Store,
) -> None:
    (first, lease_a), (second, lease_b) = await leased_session(store), await leased_session(store)
    await store.events.append(
        [
            EventRow(lease_a, user_message(1, "a")),
            EventRow(lease_b, user_message(1, "b")),
            EventRow(lease_a, assistant_message(2, "c")),
        ]
    )
    assert [(await store.sessions.get(r.id)).event_count for r in (first, second)] == [2, 1]  # type: ignore[union-attr]
    stale = replace(lease_b, epoch=lease_b.epoch + 7)
    with pytest.raises(LeaseLost):
        await store.events.append(
            [EventRow(lease_a, user_message(3, "a2")), EventRow(stale, user_message(2, "b2"))]
        )
    assert [e.seq for e in await store.events.read(first.id)] == [1, 2]
    assert [e.seq for e in await store.events.read(second.id)] == [1]


async def test_a_long_session_reads_back_whole_across_pages(store: Store) -> None:
    # More than one REST page and more than one REST insert: paging by seq must not skip or repeat.
    count = max(PAGE_ROWS, INSERT_ROWS) + 150
    record, lease = await leased_session(store)
    events = [user_message(seq, f"m{seq}") for seq in range(1, count + 1)]
    await store.events.append(rows_of(lease, *events))
    await store.events.append(rows_of(lease, *events[-600:]))  # a big batch, again: no-op
    read = await store.events.read(record.id)
    assert [e.seq for e in read] == list(range(1, count + 1))
    page = await store.events.read(record.id, after_seq=10, limit=1005)
    assert [e.seq for e in page] == list(range(11, 1016))
    assert (await store.sessions.get(record.id)).event_count == count  # type: ignore[union-attr]


async def test_text_survives_exactly(store: Store) -> None:
    record, lease = await leased_session(store)
    text = 'quotes " \\ backslash, emoji 🎉, newline\n, tab\t, <b>html</b> and ünïcode'
    await store.events.append(rows_of(lease, user_message(1, text)))
    assert await store.events.read(record.id) == [user_message(1, text)]
