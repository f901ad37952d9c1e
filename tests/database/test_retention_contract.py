"""The retention contract, on SQLite, PostgreSQL and Supabase: old empty sessions and idle ones
go (with their events, lease and summaries), never one that a live or closing lease holds; one
instance at a time holds the sweep's claim."""

from __future__ import annotations

from datetime import timedelta

from app.database.base import Store
from tests.database.builders import (
    T0,
    assistant_message,
    created,
    leased,
    leased_session,
    rows_of,
    user_message,
)

LATER = T0 + timedelta(days=2)


async def remaining(store: Store) -> set[str]:
    return {record.id for record in await store.sessions.list(limit=100, before=None, owner=None)}


async def test_empty_sessions_created_before_the_cutoff_go(store: Store) -> None:
    old_empty = await created(store, at=T0)
    new_empty = await created(store, at=LATER)
    old_spoken, lease = await leased_session(store, at=T0)
    await store.events.append(rows_of(lease, user_message(1, "q")))
    await store.leases.release(lease)
    deleted = await store.retention.delete_sessions(
        "empty", before=T0 + timedelta(days=1), batch=10
    )
    assert deleted == 1
    assert await remaining(store) == {new_empty.id, old_spoken.id}
    assert await store.sessions.get(old_empty.id) is None


async def test_idle_sessions_go_with_their_events_and_summaries(store: Store) -> None:
    idle, lease = await leased_session(store, at=T0)
    await store.events.append(rows_of(lease, user_message(1, "q"), assistant_message(2, "a")))
    await store.leases.release(lease)
    await store.jobs.request_summary(idle.id)
    fresh = await created(store, at=LATER)
    deleted = await store.retention.delete_sessions("idle", before=T0 + timedelta(days=1), batch=10)
    assert deleted == 1
    assert await remaining(store) == {fresh.id}
    assert await store.events.read(idle.id) == []


async def test_a_session_held_live_or_closing_is_never_deleted(store: Store) -> None:
    live = await created(store, at=T0)
    await leased(store, live.id)
    closing = await created(store, at=T0)
    await store.leases.mark_closing(await leased(store, closing.id))
    released = await created(store, at=T0)
    await store.leases.release(await leased(store, released.id))
    cutoff = T0 + timedelta(days=1)
    assert await store.retention.delete_sessions("idle", before=cutoff, batch=10) == 1
    assert await store.retention.delete_sessions("empty", before=cutoff, batch=10) == 0
    assert await remaining(store) == {live.id, closing.id}


async def test_deletes_go_in_batches(store: Store) -> None:
    for _ in range(5):
        await created(store, at=T0)
    cutoff = T0 + timedelta(days=1)
    batches = [
        await store.retention.delete_sessions("empty", before=cutoff, batch=2) for _ in range(4)
    ]
    assert batches == [2, 2, 1, 0]


async def test_one_holder_at_a_time_has_the_claim(store: Store) -> None:
    assert await store.retention.claim("retention", holder="a", ttl_s=60)
    assert not await store.retention.claim("retention", holder="b", ttl_s=60)
    assert await store.retention.claim("retention", holder="a", ttl_s=60)  # kept
    assert await store.retention.claim("other", holder="b", ttl_s=60)
    # An expired claim is free for anyone.
    assert await store.retention.claim("retention", holder="a", ttl_s=-1)
    assert await store.retention.claim("retention", holder="b", ttl_s=60)
    assert not await store.retention.claim("retention", holder="a", ttl_s=60)
