"""The event writer on each real store: a refusal stays with its session, a crash loses nothing,
and closing during an outage hands back what was not written."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from unittest import mock

import aiosqlite
import pytest

from app.database.base import EventConflict, EventRow, Lease, LeaseLost, Store, WriteRefused
from app.database.sqlite import SqliteStore
from app.services.event_writer import EventWriter
from app.services.supervisor import TaskSupervisor
from tests.database.builders import assistant_message, leased_session, rows_of, user_message
from tests.database.conftest import (  # noqa: F401 (fixtures)
    fake_postgrest,
    pg_database,
    rest_database,
    store,
)
from tests.support.waiting import wait_until

Refusals = list[tuple[Lease, WriteRefused]]


@pytest.fixture
async def writer(store: Store) -> AsyncIterator[tuple[EventWriter, Refusals]]:  # noqa: F811
    """A running writer on the store, recording the holdings it reports refused."""
    refusals: Refusals = []
    writer = EventWriter(
        store.events,
        flush_interval_s=0.01,
        batch_max=100,
        buffer_max=1000,
        on_refused=lambda lease, error: refusals.append((lease, error)),
    )
    supervisor = TaskSupervisor()
    supervisor.spawn_service(writer.run, name="event-writer")
    yield writer, refusals
    await writer.close(timeout_s=2)
    await supervisor.stop_services(timeout_s=1)


async def test_a_refused_session_does_not_take_other_sessions_with_it(
    store: Store,  # noqa: F811
    writer: tuple[EventWriter, Refusals],
) -> None:
    events, refusals = writer
    (first, lease_a), (lost, lease_b), (third, lease_c) = [
        await leased_session(store) for _ in range(3)
    ]
    await store.leases.release(lease_b)  # b's writer lost its lease: its events are refused
    for seq in (1, 2):
        events.submit(EventRow(lease_a, user_message(seq, f"a{seq}")))
        events.submit(EventRow(lease_b, user_message(seq, f"b{seq}")))
        events.submit(EventRow(lease_c, user_message(seq, f"c{seq}")))
    committed = events.commit(EventRow(lease_a, user_message(3, "a3")))
    refused = events.commit(EventRow(lease_b, user_message(3, "b3")))
    await committed
    with pytest.raises(LeaseLost):
        await refused
    await events.flush()
    assert [e.seq for e in await store.events.read(first.id)] == [1, 2, 3]
    assert [e.seq for e in await store.events.read(third.id)] == [1, 2]
    assert await store.events.read(lost.id) == []
    assert [lease for lease, _ in refusals] == [lease_b]  # told once
    # Later events of the refused holding fail at once, without a store round trip.
    with pytest.raises(LeaseLost):
        await events.commit(EventRow(lease_b, user_message(4, "b4")))


async def test_a_conflict_fails_its_event_and_the_rest_of_its_session_only(
    store: Store,  # noqa: F811
    writer: tuple[EventWriter, Refusals],
) -> None:
    events, refusals = writer
    (session, lease), (other, other_lease) = (
        await leased_session(store),
        await leased_session(store),
    )
    await store.events.append(rows_of(lease, user_message(1, "one"), assistant_message(2, "two")))
    events.submit(EventRow(lease, user_message(3, "three")))
    events.submit(EventRow(lease, assistant_message(2, "a different two")))  # a conflict
    events.submit(EventRow(lease, user_message(4, "four")))  # after it: would leave a gap
    events.submit(EventRow(other_lease, user_message(1, "other")))
    await events.flush()
    assert [e.seq for e in await store.events.read(session.id)] == [1, 2, 3]
    assert [e.seq for e in await store.events.read(other.id)] == [1]
    assert len(refusals) == 1
    assert refusals[0][0] == lease
    assert isinstance(refusals[0][1], EventConflict)


async def test_a_writer_that_crashes_is_restarted_and_loses_nothing(tmp_path: Path) -> None:
    sqlite = SqliteStore(str(tmp_path / "crash.db"))
    await sqlite.open()
    writer = EventWriter(sqlite.events, flush_interval_s=0.01, batch_max=100, buffer_max=1000)
    supervisor = TaskSupervisor()
    health = supervisor.spawn_service(writer.run, name="event-writer")
    session, lease = await leased_session(sqlite)
    real = aiosqlite.Connection.executemany
    calls = 0

    async def crash_once(self: aiosqlite.Connection, *args: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the write path")  # not a store error: a crash
        return await real(self, *args)

    try:
        with mock.patch.object(aiosqlite.Connection, "executemany", crash_once):
            events = [user_message(seq, f"m{seq}") for seq in (1, 2, 3)]
            for event in events[:2]:
                writer.submit(EventRow(lease, event))
            await writer.commit(EventRow(lease, events[2]))
        assert health.restarts == 1
        assert health.running
        assert await sqlite.events.read(session.id) == events
    finally:
        await writer.close(timeout_s=1)
        await supervisor.stop_services(timeout_s=1)
        await sqlite.close()


async def test_closing_while_the_store_refuses_writes_hands_back_the_events(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    sqlite = SqliteStore(str(path))
    await sqlite.open()
    writer = EventWriter(sqlite.events, flush_interval_s=0.01, batch_max=100, buffer_max=1000)
    supervisor = TaskSupervisor()
    supervisor.spawn_service(writer.run, name="event-writer")
    session, lease = await leased_session(sqlite)
    lock = sqlite3.connect(path, timeout=5, isolation_level=None)
    lock.execute("begin exclusive")  # the store now refuses every write (retryably)
    try:
        rows = [EventRow(lease, user_message(seq, f"m{seq}")) for seq in (1, 2)]
        for row in rows:
            writer.submit(row)
        await wait_until(lambda: _failing(writer), 10, what="the writer to hit the lock")
        unwritten = await writer.close(timeout_s=0.2)
    finally:
        lock.execute("rollback")
        lock.close()
    await supervisor.stop_services(timeout_s=1)
    assert unwritten == rows
    assert await sqlite.events.read(session.id) == []
    await sqlite.close()


async def _failing(writer: EventWriter) -> bool:
    return writer.failing_since is not None


async def test_events_of_a_holding_refused_earlier_fail_at_once(
    store: Store,  # noqa: F811
    writer: tuple[EventWriter, Refusals],
) -> None:
    events, refusals = writer
    _, lease = await leased_session(store)
    stale = replace(lease, epoch=lease.epoch + 5)
    with pytest.raises(LeaseLost):
        await events.commit(EventRow(stale, user_message(1, "stale")))
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(events.commit(EventRow(stale, user_message(2, "again"))), 0.5)
    events.forget(stale)  # the holding ended for good: nothing is remembered of it
    assert [lease for lease, _ in refusals] == [stale]
