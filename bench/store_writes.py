"""Batched event writes per store, in events per second: `python -m bench.store_writes`.

Each store gets fresh storage (a SQLite file in a temporary folder; a throwaway PostgreSQL
database; the fake Supabase REST API over another throwaway database), SESSIONS sessions, and
events written through `store.events.append` (fenced: each session's lease is taken first) in
batches of each size, one batch at a time, as the EventWriter does. PostgreSQL comes from
BENCH_DATABASE_URL (a role that may create databases; default: the machine's server at
127.0.0.1:5432); without one the PostgreSQL rows are skipped.
The Supabase row measures our REST path against a local fake, not Supabase's network latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.database.base import EventRow, Lease, SessionRecord, Store
from app.database.postgres import PostgresStore
from app.database.sqlite import SqliteStore
from app.database.supabase import SupabaseStore
from app.protocol import AssistantMessageEvent, ResponseStatus

ADMIN_DSN = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SCHEMA_SQL = Path(__file__).resolve().parents[1] / "schema.sql"
SESSIONS = 20
TEXT = "A typical answer of a few sentences, about two hundred characters long. " * 3


def _event(seq: int, at: datetime) -> AssistantMessageEvent:
    return AssistantMessageEvent(
        seq=seq,
        created_at=at,
        response_id=f"resp-{seq}",
        status=ResponseStatus.COMPLETED,
        text=TEXT,
        finish_reason="stop",
        usage={"prompt_tokens": 120, "completion_tokens": 60, "total_tokens": 180},
        model="bench-model",
    )


async def measure(store: Store, *, batch: int, total: int) -> float:
    """Events per second for `total` events written `batch` at a time over SESSIONS sessions."""
    now = datetime.now(UTC)
    leases = []
    for _ in range(SESSIONS):
        session_id = str(uuid.uuid4())
        await store.sessions.create(SessionRecord(session_id, now, now, "bench-model"))
        lease = await store.leases.acquire(session_id, holder="bench", ttl_s=600)
        assert isinstance(lease, Lease)
        leases.append(lease)
    per_session = total // SESSIONS
    rows = [
        EventRow(lease, _event(seq, now + timedelta(microseconds=seq)))
        for seq in range(1, per_session + 1)
        for lease in leases
    ]
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        await store.events.append(rows[start : start + batch])
    return len(rows) / (time.perf_counter() - started)


def _dsn_of(database: str) -> str:
    return urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{database}"))


@asynccontextmanager
async def throwaway_database(*, with_schema: bool) -> AsyncIterator[str]:
    admin = await asyncpg.connect(ADMIN_DSN, timeout=5)
    name = f"bench_{secrets.token_hex(6)}"
    await admin.execute(f'create database "{name}"')
    try:
        if with_schema:
            conn = await asyncpg.connect(_dsn_of(name))
            await conn.execute(SCHEMA_SQL.read_text())
            await conn.close()
        yield _dsn_of(name)
    finally:
        await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()


@asynccontextmanager
async def sqlite_store() -> AsyncIterator[Store]:
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(str(Path(folder) / "bench.db"))
        await store.open()
        yield store
        await store.close()


@asynccontextmanager
async def postgres_store() -> AsyncIterator[Store]:
    async with throwaway_database(with_schema=False) as dsn:
        store = PostgresStore(dsn, pool_min=1, pool_max=2)
        await store.open()
        yield store
        await store.close()


@asynccontextmanager
async def supabase_store() -> AsyncIterator[Store]:
    from tests.fakes.postgrest_server import FakePostgrest  # the bench reuses the test fake

    async with throwaway_database(with_schema=True) as dsn:
        with FakePostgrest(dsn) as fake:
            store = SupabaseStore(fake.url, fake.key, timeout_s=30)
            await store.open()
            yield store
            await store.close()


STORES: dict[str, Callable[[], AsyncIterator[Store]]] = {
    "sqlite": sqlite_store,  # type: ignore[dict-item]
    "postgresql": postgres_store,  # type: ignore[dict-item]
    "supabase (fake REST)": supabase_store,  # type: ignore[dict-item]
}


async def main(batches: list[int], total: int) -> None:
    print(f"| store | {' | '.join(f'batch {size}' for size in batches)} |")
    print(f"|---|{'---|' * len(batches)}")
    for name, open_store in STORES.items():
        cells = []
        try:
            for size in batches:
                async with open_store() as store:  # type: ignore[attr-defined]
                    # Per-row writes are slow: measure them on fewer events.
                    count = total if size >= 50 else max(SESSIONS * 10, total // 20)
                    cells.append(f"{await measure(store, batch=size, total=count):,.0f} ev/s")
        except (OSError, asyncpg.PostgresError) as e:
            cells = [f"skipped: {e!r}"] * len(batches)
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,100,500", help="batch sizes, comma-separated")
    parser.add_argument("--events", type=int, default=20_000, help="events per batched run")
    arguments = parser.parse_args()
    asyncio.run(main([int(size) for size in arguments.batches.split(",")], arguments.events))
