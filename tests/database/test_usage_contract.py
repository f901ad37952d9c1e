"""The usage contract (tokens per day, new sessions per hour, live sessions), on SQLite,
PostgreSQL and Supabase: tokens are counted by the store as an answer is appended, once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from app.database.base import SHARED_OWNER, Store
from app.protocol import AssistantMessageEvent
from tests.database.builders import (
    T0,
    assistant_message,
    leased,
    leased_session,
    rows_of,
    user_message,
)

DAY = datetime(2025, 3, 1, tzinfo=UTC)
HOUR = datetime(2025, 3, 1, 12, tzinfo=UTC)


def answer(
    seq: int, usage: dict[str, object] | None, *, at: datetime = T0
) -> AssistantMessageEvent:
    return assistant_message(seq, "a").model_copy(update={"usage": usage, "created_at": at})


async def test_an_answer_counts_its_total_tokens_on_its_utc_day(store: Store) -> None:
    _, lease = await leased_session(store, owner="key:a")
    await store.events.append(rows_of(lease, user_message(1, "q"), answer(2, {"total_tokens": 30})))
    late = datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC)
    next_day = datetime(2025, 3, 2, 0, 0, 1, tzinfo=UTC)
    await store.events.append(
        rows_of(
            lease,
            answer(3, {"total_tokens": 5}, at=late),
            answer(4, {"total_tokens": 7}, at=next_day),
        )
    )
    assert await store.usage.amount("key:a", "tokens", window_start=DAY) == 35
    assert await store.usage.amount("key:a", "tokens", window_start=DAY + timedelta(days=1)) == 7
    assert await store.usage.amount("key:b", "tokens", window_start=DAY) == 0


async def test_tokens_without_a_total_are_prompt_plus_completion_and_junk_counts_nothing(
    store: Store,
) -> None:
    _, lease = await leased_session(store)  # auth off: the shared owner
    await store.events.append(
        rows_of(
            lease,
            answer(1, {"prompt_tokens": 10, "completion_tokens": 4}),
            answer(2, {"total_tokens": "many", "completion_tokens": 2.0}),
            answer(3, None),
            answer(4, {"total_tokens": 10**30}),
        )
    )
    used = await store.usage.amount(SHARED_OWNER, "tokens", window_start=DAY)
    assert used == 14 + 2 + 10**12


async def test_a_retried_append_counts_its_tokens_once(store: Store) -> None:
    _, lease = await leased_session(store, owner="key:a")
    rows = rows_of(lease, answer(1, {"total_tokens": 9}))
    await store.events.append(rows)
    await store.events.append(rows)
    assert await store.usage.amount("key:a", "tokens", window_start=DAY) == 9


async def test_take_counts_up_to_the_limit_and_no_further(store: Store) -> None:
    taken = [
        await store.usage.take("key:a", "sessions", window_start=HOUR, limit=3) for _ in range(5)
    ]
    assert taken == [True, True, True, False, False]
    assert await store.usage.amount("key:a", "sessions", window_start=HOUR) == 3
    # Another window, another owner: counted apart.
    later = HOUR + timedelta(hours=1)
    assert await store.usage.take("key:a", "sessions", window_start=later, limit=3)
    assert await store.usage.take("key:b", "sessions", window_start=HOUR, limit=3)


async def test_concurrent_takes_never_pass_the_limit(store: Store) -> None:
    async def take() -> bool:
        return await store.usage.take("key:a", "sessions", window_start=HOUR, limit=4)

    taken = await asyncio.gather(*(take() for _ in range(12)))
    assert sum(taken) == 4


async def test_live_sessions_are_the_owners_sessions_with_a_live_lease(store: Store) -> None:
    first, _ = await leased_session(store, owner="key:a")
    _, second_lease = await leased_session(store, owner="key:a")
    await leased_session(store, owner="key:b")
    third, third_lease = await leased_session(store, owner="key:a")
    await store.leases.mark_closing(second_lease)  # its client left
    await store.leases.release(third_lease)
    assert await store.usage.live_sessions("key:a", limit=10) == [first.id]
    assert len(await store.usage.live_sessions("key:b", limit=10)) == 1
    assert await store.usage.live_sessions("key:c", limit=10) == []
    await leased(store, third.id)
    assert len(await store.usage.live_sessions("key:a", limit=1)) == 1
    assert sorted(await store.usage.live_sessions("key:a", limit=10)) == sorted(
        [first.id, third.id]
    )


async def test_old_windows_are_forgotten(store: Store) -> None:
    await store.usage.take("key:a", "sessions", window_start=HOUR, limit=9)
    await store.usage.take("key:a", "sessions", window_start=HOUR + timedelta(days=2), limit=9)
    forgotten = await store.usage.forget_before(HOUR + timedelta(days=1))
    assert forgotten == 1
    assert await store.usage.amount("key:a", "sessions", window_start=HOUR) == 0
    after = HOUR + timedelta(days=2)
    assert await store.usage.amount("key:a", "sessions", window_start=after) == 1
