"""The lease repository's contract, on SQLite, PostgreSQL and Supabase (fake PostgREST)."""

from __future__ import annotations

import uuid

from app.database.base import Lease, LeaseState, Store
from tests.database.builders import created, leased


async def test_a_lease_has_one_holder_until_released_or_expired(store: Store) -> None:
    record = await created(store)
    first = await leased(store, record.id, holder="a")
    again = await leased(store, record.id, holder="a")  # ours already: a new holding
    assert again.epoch == first.epoch + 1
    assert await store.leases.acquire(record.id, holder="b", ttl_s=30) is LeaseState.LIVE
    await store.leases.mark_closing(first)  # an ended holding: no effect
    assert await store.leases.acquire(record.id, holder="b", ttl_s=30) is LeaseState.LIVE
    await store.leases.mark_closing(again)
    assert await store.leases.acquire(record.id, holder="b", ttl_s=30) is LeaseState.CLOSING
    assert await store.leases.renew([Lease(record.id, "b", again.epoch)], ttl_s=30) == set()
    assert await store.leases.renew([again], ttl_s=-1) == {record.id}
    # Renewed into the past: expired, as if its instance had died; b takes it.
    taken = await leased(store, record.id, holder="b")
    assert taken.epoch == again.epoch + 1
    await store.leases.release(again)  # no longer a's: no effect
    assert await store.leases.acquire(record.id, holder="a", ttl_s=30) is LeaseState.LIVE
    await store.leases.release(taken)
    assert (await leased(store, record.id, holder="a")).epoch == taken.epoch + 1


async def test_no_lease_for_a_session_that_does_not_exist(store: Store) -> None:
    assert await store.leases.acquire(str(uuid.uuid4()), holder="a", ttl_s=30) is None
    assert await store.leases.acquire("not-a-uuid", holder="a", ttl_s=30) is None
    record = await created(store)
    lease = await leased(store, record.id)
    await store.sessions.delete(record.id)
    assert await store.leases.acquire(record.id, holder="a", ttl_s=30) is None
    assert await store.leases.renew([lease], ttl_s=30) == set()


async def test_a_renewal_reports_holdings_that_ended(store: Store) -> None:
    kept, lost = await created(store), await created(store)
    kept_lease, lost_lease = await leased(store, kept.id), await leased(store, lost.id)
    await store.leases.release(lost_lease)
    assert await store.leases.renew([kept_lease, lost_lease], ttl_s=30) == {kept.id}


async def test_many_leases_renew_in_pages(store: Store) -> None:
    # More ids than fit one statement or one REST filter.
    records = [await created(store) for _ in range(230)]
    leases = [await leased(store, record.id) for record in records]
    assert await store.leases.renew(leases, ttl_s=30) == {record.id for record in records}


async def test_a_dead_holders_leases_are_freed_at_once(store: Store) -> None:
    mine, theirs = await created(store), await created(store)
    await leased(store, mine.id, holder="dead")
    other = await leased(store, theirs.id, holder="alive")
    assert await store.leases.release_holder("dead") == 1
    assert await store.leases.release_holder("dead") == 0
    assert isinstance(await store.leases.acquire(mine.id, holder="next", ttl_s=30), Lease)
    assert await store.leases.acquire(theirs.id, holder="next", ttl_s=30) is LeaseState.LIVE
    assert await store.leases.renew([other], ttl_s=30) == {theirs.id}


async def test_a_session_is_live_while_its_lease_is(store: Store) -> None:
    record = await created(store)
    assert (await store.sessions.get(record.id)).live is False  # type: ignore[union-attr]
    lease = await leased(store, record.id)
    assert (await store.sessions.get(record.id)).live is True  # type: ignore[union-attr]
    listed = await store.sessions.list(limit=5, before=None, owner=None)
    assert [r.live for r in listed] == [True]
    await store.leases.mark_closing(lease)
    assert (await store.sessions.get(record.id)).live is False  # type: ignore[union-attr]


async def test_a_holding_marked_closing_is_live_again_when_a_client_joins(store: Store) -> None:
    record = await created(store)
    lease = await leased(store, record.id, holder="a")
    await store.leases.mark_closing(lease)
    assert await store.leases.acquire(record.id, holder="b", ttl_s=30) is LeaseState.CLOSING
    await store.leases.mark_live(lease)  # a client joined its running response
    assert await store.leases.acquire(record.id, holder="b", ttl_s=30) is LeaseState.LIVE
    await store.leases.release(lease)
    await store.leases.mark_live(lease)  # an ended holding: no effect
    assert isinstance(await store.leases.acquire(record.id, holder="b", ttl_s=30), Lease)
