"""Throwaway PostgreSQL databases for the store tests, and the fake Supabase REST API over one.

The server is the machine's PostgreSQL at 127.0.0.1:5432 (scripts/test-services.sh starts it),
or the one that `TEST_DATABASE_URL` names (a URL of a role allowed to create databases). Without
one the tests that need it skip in a plain local run and fail where every test must run
(`NO_SKIPS`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from app.database.base import Store
from app.database.postgres import PostgresStore
from app.database.sqlite import SqliteStore
from app.database.supabase import SupabaseStore
from tests.fakes.postgrest_server import FakePostgrest
from tests.support.guard_plugin import NO_SKIPS

ADMIN_DSN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SCHEMA_SQL = Path(__file__).resolve().parents[2] / "schema.sql"
UNREACHABLE = "no PostgreSQL for the tests (127.0.0.1:5432, or TEST_DATABASE_URL)"

T = TypeVar("T")


def run_sync(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on its own loop in another thread (for sync fixtures)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


def dsn_of(database: str) -> str:
    """The admin URL pointed at another database."""
    return urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{database}"))


async def connect_admin() -> asyncpg.Connection:
    """The maintenance connection; without a server, skips (fails where NO_SKIPS)."""
    try:
        return await asyncpg.connect(ADMIN_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        if NO_SKIPS:
            pytest.fail(f"{UNREACHABLE} (this run must run the PostgreSQL tests): {e!r}")
        pytest.skip(UNREACHABLE)


async def _create(name: str) -> None:
    admin = await connect_admin()
    try:
        await admin.execute(f'create database "{name}"')
    finally:
        await admin.close()


async def _drop(name: str) -> None:
    admin = await connect_admin()
    try:
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


async def _apply_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(SCHEMA_SQL.read_text())
    finally:
        await conn.close()


def throwaway_database(prefix: str) -> Iterator[str]:
    """Create an empty database, yield its URL, drop it afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    run_sync(_create(name))
    try:
        yield dsn_of(name)
    finally:
        run_sync(_drop(name))


async def clear_tables(dsn: str) -> None:
    """Empty the store's tables if they exist yet, so tests sharing a database start clean."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(
            "do $$ begin if to_regclass('public.sessions') is not null then "
            "truncate sessions, session_events, session_leases, user_profiles, owner_usage, "
            "housekeeping_claims cascade; "
            "end if; end $$"
        )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """An empty database for one test module (the PostgreSQL store migrates it itself)."""
    yield from throwaway_database("store_test")


@pytest.fixture(scope="module")
def rest_database() -> Iterator[str]:
    """A database holding `schema.sql`, as a Supabase project would after the SQL editor."""
    for dsn in throwaway_database("rest_test"):
        run_sync(_apply_schema(dsn))
        yield dsn


@pytest.fixture
def fake_postgrest(rest_database: str) -> Iterator[FakePostgrest]:
    """The fake Supabase REST API over `rest_database`; fails the test on a bad request."""
    run_sync(clear_tables(rest_database))
    with FakePostgrest(rest_database) as fake:
        yield fake
    fake.assert_clean()


STORE_KINDS = ["sqlite", "postgresql", "supabase"]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, empty store of each kind: the contract suites run on all three."""
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
