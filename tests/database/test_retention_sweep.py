"""The retention sweep on each store: old empty sessions always go, idle ones only with
`RETENTION_DAYS`, never a live one or a recent one; one instance at a time sweeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.database.base import Store
from app.services.retention import RetentionSweeper
from tests.database.builders import (
    T0,
    assistant_message,
    created,
    leased,
    leased_session,
    rows_of,
    user_message,
)


def sweeper(store: Store, holder: str, *, retention_days: float | None) -> RetentionSweeper:
    return RetentionSweeper(
        store.retention,
        store.usage,
        holder=holder,
        retention_days=retention_days,
        sweep_s=60,
        batch=2,
    )


async def spoken(store: Store, *, at: datetime) -> str:
    record, lease = await leased_session(store, at=at)
    question = user_message(1, "q").model_copy(update={"created_at": at})
    answer = assistant_message(2, "a").model_copy(update={"created_at": at})
    await store.events.append(rows_of(lease, question, answer))
    await store.leases.release(lease)
    return record.id


async def test_the_sweep_deletes_only_what_it_should(store: Store) -> None:
    now = datetime.now(UTC)
    old_empty = [(await created(store, at=T0)).id for _ in range(3)]
    recent_empty = (await created(store, at=now)).id
    old_spoken = [await spoken(store, at=T0) for _ in range(3)]
    recent_spoken = await spoken(store, at=now - timedelta(days=5))
    live_old = (await created(store, at=T0)).id
    await leased(store, live_old)

    first = sweeper(store, "instance-a", retention_days=None)
    other = sweeper(store, "instance-b", retention_days=30)
    assert await first.sweep() == 3  # the old empty ones, in batches of two
    assert await other.sweep() == 0  # the claim is the first instance's
    left = {r.id for r in await store.sessions.list(limit=100, before=None, owner=None)}
    assert left == {recent_empty, *old_spoken, recent_spoken, live_old}
    assert not set(old_empty) & left

    with_retention = sweeper(store, "instance-a", retention_days=30)
    assert await with_retention.sweep() == 3
    left = {r.id for r in await store.sessions.list(limit=100, before=None, owner=None)}
    assert left == {recent_empty, recent_spoken, live_old}
    for session_id in old_spoken:
        assert await store.events.read(session_id) == []
