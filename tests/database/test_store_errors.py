"""Store selection, start-up failures naming the setting, and store errors (PostgreSQL, REST)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from pydantic import ValidationError

from app.database.base import EventConflict, LeaseLost, StoreError
from app.database.factory import create_store
from app.database.migrations import latest_version
from app.database.postgres import (
    CONFLICT_STATE,
    LEASE_LOST_STATE,
    PostgresStore,
    uses_statement_cache,
)
from app.database.supabase import INSERT_ROWS, SupabaseStore
from app.services.runtime import start_runtime
from app.settings import Settings
from tests.conftest import StartServer
from tests.database.builders import (
    assistant_message,
    leased_session,
    rows_of,
    session_record,
    user_message,
)
from tests.database.conftest import clear_tables, connect_admin, dsn_of, run_sync
from tests.fakes.postgrest_server import FakePostgrest
from tests.support.waiting import wait_until


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# ---------------------------------------------------------------- selection and settings


def test_database_url_wins_then_supabase_then_sqlite() -> None:
    supabase = {"supabase_url": "https://ref.supabase.co", "supabase_key": "secret"}
    assert settings().store_kind() == "sqlite"
    assert settings().sqlite_path() == "./data/app.db"
    assert settings(**supabase).store_kind() == "supabase"
    assert settings(database_url="postgresql://u@h/db", **supabase).store_kind() == "postgresql"
    assert settings(database_url="postgres://u@h/db").store_kind() == "postgresql"
    assert settings(database_url="sqlite:///x.db", **supabase).store_kind() == "sqlite"
    assert settings(database_url=" ", supabase_url="", supabase_key="").store_kind() == "sqlite"
    assert isinstance(create_store(settings(**supabase)), SupabaseStore)
    assert isinstance(create_store(settings(database_url="postgresql://u@h/db")), PostgresStore)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"database_url": "mysql://u@h/db"}, "DATABASE_URL"),
        ({"supabase_url": "ref.supabase.co", "supabase_key": "k"}, "SUPABASE_URL"),
        ({"supabase_url": "https://ref.supabase.co"}, "SUPABASE_KEY"),
        ({"supabase_key": "k"}, "SUPABASE_URL"),
        ({"database_pool_min": 5, "database_pool_max": 2}, "DATABASE_POOL_MAX"),
    ],
)
def test_wrong_store_settings_are_refused_naming_the_variable(
    values: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        settings(**values)


def test_statement_cache_is_off_behind_the_transaction_pooler_or_when_asked() -> None:
    assert uses_statement_cache("postgresql://u:p@pooler.supabase.com:5432/postgres", wanted=True)
    assert not uses_statement_cache("postgresql://u:p@pooler.supabase.com:6543/db", wanted=True)
    assert not uses_statement_cache("postgresql://u@h:5432/db", wanted=False)
    pooled = create_store(settings(database_url="postgresql://u@pooler:6543/postgres"))
    assert isinstance(pooled, PostgresStore)
    assert not pooled.statement_cache


# ---------------------------------------------------------------- PostgreSQL


async def test_postgres_without_statement_cache_works(pg_database: str) -> None:
    store = PostgresStore(pg_database, statement_cache=False)
    await store.open()
    try:
        await clear_tables(pg_database)
        record, lease = await leased_session(store)
        await store.events.append(rows_of(lease, user_message(1, "hi")))
        assert await store.events.read(record.id) == [user_message(1, "hi")]
    finally:
        await store.close()


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://postgres:s3cret@127.0.0.1:{closed_port()}/postgres",
        dsn_of("no_such_database_here"),
    ],
)
async def test_a_wrong_database_url_stops_the_start_naming_it(dsn: str) -> None:
    await connect_admin()  # skip (or fail, NO_SKIPS) without a server: the second case needs one
    with pytest.raises(StoreError, match="DATABASE_URL") as caught:
        await start_runtime(settings(database_url=dsn, database_timeout_s=3), tools=[])
    assert "s3cret" not in str(caught.value)
    assert caught.value.retryable is False


# uvicorn ends its thread with SystemExit when the lifespan fails: that is the point here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_the_server_does_not_start_on_a_wrong_database_url(start_server: StartServer) -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        start_server(database_url=f"postgresql://postgres@127.0.0.1:{closed_port()}/db")


@pytest.fixture
async def pg_store(pg_database: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_database, pool_min=1, pool_max=1)
    await store.open()
    await clear_tables(pg_database)
    yield store
    await store.close()


async def test_a_connection_lost_mid_query_is_a_retryable_store_error(
    pg_store: PostgresStore, pg_database: str
) -> None:
    database = pg_database.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg_database, timeout=5)
    try:
        # Hold the table so the store's query waits on the server, then kill its connection.
        locker = admin.transaction()
        await locker.start()
        await admin.execute("lock table sessions in access exclusive mode")
        read = asyncio.create_task(pg_store.sessions.get(str(uuid.uuid4())))

        async def store_is_waiting() -> bool:
            waiting: int = await admin.fetchval(
                "select count(*) from pg_stat_activity where datname = $1 "
                "and wait_event_type = 'Lock' and pid <> pg_backend_pid()",
                database,
            )
            return waiting > 0

        await wait_until(store_is_waiting, what="the store's query to wait on the lock")
        await admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = $1 and pid <> pg_backend_pid()",
            database,
        )
        with pytest.raises(StoreError) as caught:
            await read
        await locker.rollback()
    finally:
        await admin.close()
    assert caught.value.retryable is True
    await pg_store.ping()  # the pool replaces the dead connection


async def test_a_constraint_violation_is_not_retryable(pg_store: PostgresStore) -> None:
    record = session_record()
    await pg_store.sessions.create(record)
    with pytest.raises(StoreError) as caught:
        await pg_store.sessions.create(record)
    assert caught.value.retryable is False
    assert isinstance(caught.value.__cause__, asyncpg.UniqueViolationError)


async def test_a_refused_append_names_its_cause_and_session(pg_store: PostgresStore) -> None:
    record, lease = await leased_session(pg_store)
    await pg_store.events.append(rows_of(lease, user_message(1, "a", message_id="same")))
    with pytest.raises(EventConflict) as caught:
        await pg_store.events.append(rows_of(lease, user_message(2, "b", message_id="same")))
    assert caught.value.session_id == record.id
    assert isinstance(caught.value.__cause__, asyncpg.PostgresError)
    assert caught.value.__cause__.sqlstate == CONFLICT_STATE
    await pg_store.leases.release(lease)
    with pytest.raises(LeaseLost) as lost:
        await pg_store.events.append(rows_of(lease, user_message(2, "b")))
    assert lost.value.session_id == record.id
    assert isinstance(lost.value.__cause__, asyncpg.PostgresError)
    assert lost.value.__cause__.sqlstate == LEASE_LOST_STATE


async def test_a_closed_postgres_store_answers_store_errors(pg_store: PostgresStore) -> None:
    await pg_store.close()
    with pytest.raises(StoreError) as caught:
        await pg_store.sessions.get(str(uuid.uuid4()))
    assert caught.value.retryable is False


# ---------------------------------------------------------------- Supabase


async def test_a_wrong_supabase_key_stops_the_start_naming_it(
    fake_postgrest: FakePostgrest,
) -> None:
    values = {"supabase_url": fake_postgrest.url, "supabase_key": "not-the-key"}
    with pytest.raises(StoreError, match="SUPABASE_KEY was refused"):
        await start_runtime(settings(**values), tools=[])


async def test_an_unreachable_supabase_url_stops_the_start_naming_it() -> None:
    values = {"supabase_url": f"http://127.0.0.1:{closed_port()}", "supabase_key": "k"}
    with pytest.raises(StoreError, match="cannot reach SUPABASE_URL"):
        await start_runtime(settings(**values, database_timeout_s=3), tools=[])


async def test_a_supabase_project_without_the_schema_says_what_to_run(pg_database: str) -> None:
    empty = run_sync(_empty_database_dsn())
    with FakePostgrest(empty) as fake:
        store = SupabaseStore(fake.url, fake.key)
        with pytest.raises(StoreError, match=r"run schema\.sql"):
            await store.open()
    run_sync(_drop(empty))


async def _empty_database_dsn() -> str:
    admin = await connect_admin()
    name = f"empty_rest_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'create database "{name}"')
    await admin.close()
    return dsn_of(name)


async def _drop(dsn: str) -> None:
    admin = await connect_admin()
    await admin.execute(f'drop database if exists "{dsn.rsplit("/", 1)[1]}" with (force)')
    await admin.close()


async def test_an_older_supabase_schema_says_to_run_schema_sql_again(
    fake_postgrest: FakePostgrest,
) -> None:
    conn = await asyncpg.connect(fake_postgrest.dsn, timeout=5)
    try:
        await conn.execute("delete from schema_version where version > 1")
        store = SupabaseStore(fake_postgrest.url, fake_postgrest.key)
        latest = latest_version("postgres")
        with pytest.raises(StoreError, match=rf"at version 1, this app needs {latest}: run schema"):
            await store.open()
    finally:
        await conn.execute(
            "insert into schema_version (version) select generate_series(2, $1)",
            latest_version("postgres"),
        )
        await conn.close()


@pytest.fixture
async def rest_store(fake_postgrest: FakePostgrest) -> AsyncIterator[SupabaseStore]:
    store = SupabaseStore(fake_postgrest.url, fake_postgrest.key, timeout_s=5)
    await store.open()
    yield store
    await store.close()


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (
            503,
            {"code": "PGRST001", "message": "Database client error. Retrying the connection."},
            True,
        ),
        (504, {"code": "PGRST003", "message": "Timed out acquiring connection from pool."}, True),
        (409, {"code": "23503", "message": "insert or update violates foreign key"}, False),
        (400, {"code": "22P02", "message": "invalid input syntax for type uuid"}, False),
        # No code in the body (a gateway's own answer): the HTTP status decides.
        (502, {"message": "Bad gateway"}, True),
        (503, {"message": "Service unavailable"}, True),
        (504, {"message": "Gateway timeout"}, True),
        (400, {"message": "Bad request"}, False),
        (413, {"message": "Payload too large"}, False),
    ],
)
async def test_rest_errors_become_store_errors(
    rest_store: SupabaseStore,
    fake_postgrest: FakePostgrest,
    status: int,
    body: dict[str, str],
    retryable: bool,
) -> None:
    fake_postgrest.fail_next(status, body)
    with pytest.raises(StoreError) as caught:
        await rest_store.sessions.get(str(uuid.uuid4()))
    assert caught.value.retryable is retryable
    assert body["message"] in str(caught.value)


async def test_an_append_refused_by_the_gateway_is_retryable_and_stores_once_again(
    rest_store: SupabaseStore, fake_postgrest: FakePostgrest
) -> None:
    record, lease = await leased_session(rest_store)
    rows = rows_of(lease, user_message(1, "hi"), assistant_message(2, "yo"))
    fake_postgrest.fail_next(503, {"message": "Service unavailable"})
    with pytest.raises(StoreError) as caught:
        await rest_store.events.append(rows)
    assert caught.value.retryable is True
    await rest_store.events.append(rows)
    await rest_store.events.append(rows)  # an identical retry: skipped
    assert await rest_store.events.read(record.id) == [
        user_message(1, "hi"),
        assistant_message(2, "yo"),
    ]


async def test_a_batch_of_several_rest_calls_failing_halfway_is_completed_once_by_a_retry(
    rest_store: SupabaseStore, fake_postgrest: FakePostgrest
) -> None:
    record, lease = await leased_session(rest_store)
    count = INSERT_ROWS + 200  # two calls of `append_session_events`
    rows = rows_of(lease, *(user_message(seq, f"m{seq}") for seq in range(1, count + 1)))
    fake_postgrest.fail_next(502, {"message": "Bad gateway"}, after=1)  # the second call
    with pytest.raises(StoreError) as caught:
        await rest_store.events.append(rows)
    assert caught.value.retryable is True
    assert [e.seq for e in await rest_store.events.read(record.id)] == list(
        range(1, INSERT_ROWS + 1)
    )
    await rest_store.events.append(rows)  # the writer's retry: the stored half is skipped
    assert await rest_store.events.read(record.id) == [row.event for row in rows]
    assert (await rest_store.sessions.get(record.id)).event_count == count  # type: ignore[union-attr]


async def test_a_lost_lease_over_rest_names_its_session(rest_store: SupabaseStore) -> None:
    record, lease = await leased_session(rest_store)
    await rest_store.leases.release(lease)
    with pytest.raises(LeaseLost) as caught:
        await rest_store.events.append(rows_of(lease, user_message(1, "late")))
    assert caught.value.session_id == record.id
    assert caught.value.retryable is False


async def test_a_dropped_rest_connection_is_retryable(
    rest_store: SupabaseStore, fake_postgrest: FakePostgrest
) -> None:
    fake_postgrest.__exit__(None, None, None)  # the API goes away
    with pytest.raises(StoreError) as caught:
        await rest_store.ping()
    assert caught.value.retryable is True
