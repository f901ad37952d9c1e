"""Background store work gives way to live work (app/database/background.py), on SQLite and
PostgreSQL (the Supabase store has no gate: its requests go to a remote gateway over up to 100
HTTP connections).

Many background tasks (teardowns, summaries: the supervisor's `background=True`) queue their
store operations; a live operation issued after them all finishes before almost all of them,
not behind them in arrival order. Without the gate SQLite's one writer serves them first come
first served, and the PostgreSQL pool hands out its connections likewise.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from app.database.base import Store
from app.services.supervisor import TaskSupervisor

QUEUED = 40
# Enough live writes at once that the PostgreSQL pool (4 connections in the fixture) has them all
# open: a connection being opened would take longer than many background writes.
WARM_UP = 4
# How many background operations may finish before the live one: the one in flight when it
# starts (the gate's one slot in both stores here) and one or two that start meanwhile; far
# fewer than QUEUED.
AHEAD_AT_MOST = {"sqlite": 2, "postgresql": 3}

pytestmark = pytest.mark.parametrize("store", ["sqlite", "postgresql"], indirect=True)


async def test_a_live_write_does_not_wait_behind_queued_background_writes(store: Store) -> None:
    finished: list[str] = []
    write = writer(store, finished)
    await warm_up(store)
    supervisor = TaskSupervisor()
    for i in range(QUEUED):
        supervisor.spawn(write(f"background-{i}"), name=f"summary-{i}", background=True)
    for _ in range(3):  # every background task reaches the store and waits there
        await asyncio.sleep(0)
    await write("live")
    await supervisor.shutdown(grace_s=10)

    assert len(finished) == QUEUED + 1, "every background write still happens"
    assert finished.index("live") <= AHEAD_AT_MOST[store.kind], finished


async def test_a_live_task_started_by_background_work_is_live(store: Store) -> None:
    """The mark goes with the task that asked for it: a task that background work spawns
    without `background=True` does not queue with it."""
    await warm_up(store)
    supervisor = TaskSupervisor()
    finished: list[str] = []
    write = writer(store, finished)

    async def background_work() -> None:
        for i in range(QUEUED):
            supervisor.spawn(write(f"background-{i}"), name=f"summary-{i}", background=True)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await supervisor.spawn(write("live"), name="live")

    await supervisor.spawn(background_work(), name="poll", background=True)
    await supervisor.shutdown(grace_s=10)

    assert len(finished) == QUEUED + 1
    assert finished.index("live") <= AHEAD_AT_MOST[store.kind], finished


def writer(store: Store, finished: list[str]) -> Callable[[str], Coroutine[Any, Any, None]]:
    """A store write (one row that matches nothing) that notes its name once it is done."""

    async def write(name: str) -> None:
        await store.jobs.request_summary(str(uuid.uuid4()))
        finished.append(name)

    return write


async def warm_up(store: Store) -> None:
    await asyncio.gather(*(store.jobs.request_summary(str(uuid.uuid4())) for _ in range(WARM_UP)))
