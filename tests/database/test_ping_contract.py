"""`ping`, which /readyz asks, on SQLite, PostgreSQL and Supabase (fake PostgREST)."""

from __future__ import annotations

import pytest

from app.database.base import Store, StoreError


async def test_an_open_store_answers_a_ping(store: Store) -> None:
    await store.ping()


async def test_a_closed_store_fails_a_ping_with_a_store_error(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreError):
        await store.ping()
