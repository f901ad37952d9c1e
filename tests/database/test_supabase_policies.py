"""`supabase/policies.sql` on a real PostgreSQL with Supabase-like roles and a stand-in auth.uid().

Supabase's roles (`anon`, `authenticated`, `service_role`) are made here if missing (roles belong
to the whole server; the database is a throwaway one), and `auth.uid()` reads the same setting
Supabase's does (`request.jwt.claim.sub`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from app.database.base import EventRow, Lease
from app.database.migrations import latest_version
from app.database.postgres import append_row
from tests.database.builders import user_message
from tests.database.conftest import SCHEMA_SQL, connect_admin, run_sync, throwaway_database

POLICIES_SQL = Path(__file__).resolve().parents[2] / "supabase" / "policies.sql"
USER_A, USER_B = str(uuid.uuid4()), str(uuid.uuid4())
TABLES = ("sessions", "session_events", "session_leases", "user_profiles", "schema_version")

_ROLES = """
do $$
declare
    spec text[];
begin
    foreach spec slice 1 in array array[
        ['anon', 'nologin'], ['authenticated', 'nologin'], ['service_role', 'nologin bypassrls']
    ] loop
        begin
            execute format('create role %I %s', spec[1], spec[2]);
        exception when duplicate_object or unique_violation then
            null;  -- made by an earlier run, or by a test running at the same moment
        end;
    end loop;
end
$$;
"""

_AUTH_STAND_IN = """
create schema if not exists auth;
create or replace function auth.uid() returns uuid language sql stable as
    $$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
grant usage on schema auth to anon, authenticated, service_role;
grant execute on function auth.uid() to anon, authenticated, service_role;
"""


async def _prepare(dsn: str) -> None:
    admin = await connect_admin()
    try:
        await admin.execute(_ROLES)
    finally:
        await admin.close()
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(_AUTH_STAND_IN)
        await conn.execute(SCHEMA_SQL.read_text())
        await conn.execute(POLICIES_SQL.read_text())
        await conn.execute(POLICIES_SQL.read_text())  # idempotent: the editor may run it again
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def supabase_like() -> Iterator[str]:
    for dsn in throwaway_database("policies_test"):
        run_sync(_prepare(dsn))
        yield dsn


@pytest.fixture
async def conn(supabase_like: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(supabase_like, timeout=5)
    try:
        await connection.execute("truncate sessions, session_events cascade")
        yield connection
    finally:
        await connection.close()


async def as_role(conn: asyncpg.Connection, role: str, user: str | None = None) -> None:
    """Act as Supabase's PostgREST does for a request: a role, and the JWT's subject."""
    await conn.execute(f"set role {role}")
    await conn.execute("select set_config('request.jwt.claim.sub', $1, false)", user or "")


async def add_session(conn: asyncpg.Connection, owner: str) -> uuid.UUID:
    session_id: uuid.UUID = await conn.fetchval(
        "insert into sessions (owner, model) values ($1, 'm') returning id", owner
    )
    return session_id


async def add_event(conn: asyncpg.Connection, session_id: uuid.UUID, seq: int) -> str:
    status: str = await conn.execute(
        "insert into session_events (session_id, seq, type, data) "
        "values ($1, $2, 'user.message', '{}'::jsonb)",
        session_id,
        seq,
    )
    return status


async def test_a_user_reads_and_appends_to_their_own_session(conn: asyncpg.Connection) -> None:
    await as_role(conn, "authenticated", USER_A)
    session_id = await add_session(conn, USER_A)
    await add_event(conn, session_id, 1)
    await add_event(conn, session_id, 2)
    # The trigger (security definer) keeps the count even though users may not bypass RLS.
    assert await conn.fetchval("select event_count from sessions where id = $1", session_id) == 2
    assert await conn.fetchval("select count(*) from session_events") == 2


async def test_user_b_cannot_read_or_append_to_user_a_session(conn: asyncpg.Connection) -> None:
    await as_role(conn, "authenticated", USER_A)
    session_id = await add_session(conn, USER_A)
    await add_event(conn, session_id, 1)

    await as_role(conn, "authenticated", USER_B)
    assert await conn.fetch("select id from sessions") == []
    assert await conn.fetch("select seq from session_events") == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await add_event(conn, session_id, 2)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await add_session(conn, USER_A)  # nor make a session in A's name
    updated = await conn.execute("update sessions set title = 'mine' where id = $1", session_id)
    deleted = await conn.execute("delete from sessions where id = $1", session_id)
    assert (updated, deleted) == ("UPDATE 0", "DELETE 0")

    await as_role(conn, "service_role")
    row = await conn.fetchrow("select title, event_count from sessions where id = $1", session_id)
    assert row is not None
    assert (row["title"], row["event_count"]) == (None, 1)


async def test_events_are_append_only_for_users(conn: asyncpg.Connection) -> None:
    await as_role(conn, "authenticated", USER_A)
    session_id = await add_session(conn, USER_A)
    await add_event(conn, session_id, 1)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("update session_events set seq = 9")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("delete from session_events")


async def test_anon_reaches_nothing(conn: asyncpg.Connection) -> None:
    await as_role(conn, "authenticated", USER_A)
    await add_session(conn, USER_A)
    await as_role(conn, "anon")
    for table in TABLES:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(f"select * from {table}")


async def test_the_service_role_sees_every_session(conn: asyncpg.Connection) -> None:
    await as_role(conn, "authenticated", USER_A)
    await add_session(conn, USER_A)
    await as_role(conn, "authenticated", USER_B)
    await add_session(conn, USER_B)
    await as_role(conn, "service_role")
    owners = {row["owner"] for row in await conn.fetch("select owner from sessions")}
    assert owners == {USER_A, USER_B}
    assert await conn.fetchval("select max(version) from schema_version") == latest_version(
        "postgres"
    )


async def test_users_cannot_see_or_take_leases(conn: asyncpg.Connection) -> None:
    await as_role(conn, "authenticated", USER_A)
    session_id = await add_session(conn, USER_A)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.fetch("select * from session_leases")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(
            "insert into session_leases (session_id, holder, state, expires_at, epoch) "
            "values ($1, 'me', 'live', now() + interval '1 hour', 1)",
            session_id,
        )


async def test_only_the_service_role_appends_through_the_fenced_function(
    conn: asyncpg.Connection,
) -> None:
    await as_role(conn, "authenticated", USER_A)
    session_id = await add_session(conn, USER_A)
    await as_role(conn, "service_role")
    await conn.execute(
        "insert into session_leases (session_id, holder, state, expires_at, epoch) "
        "values ($1, 'server', 'live', now() + interval '1 hour', 1)",
        session_id,
    )
    lease = Lease(str(session_id), "server", 1)
    payload = orjson.dumps([append_row(EventRow(lease, user_message(1, "hi")))]).decode()
    append = "select public.append_session_events($1::jsonb)"
    # Even the session's owner may not write past the lease check (the function runs as them).
    await as_role(conn, "authenticated", USER_A)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(append, payload)
    await as_role(conn, "service_role")
    await conn.execute(append, payload)
    assert await conn.fetchval("select event_count from sessions where id = $1", session_id) == 1
