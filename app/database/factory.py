"""Chooses the store from the settings: the one place that knows every backend."""

from __future__ import annotations

from app.database.base import Store
from app.database.postgres import PostgresStore
from app.database.sqlite import SqliteStore
from app.database.supabase import SupabaseStore
from app.settings import Settings


def create_store(settings: Settings) -> Store:
    """DATABASE_URL (sqlite or postgresql) wins; else SUPABASE_URL + SUPABASE_KEY; else SQLite."""
    kind = settings.store_kind()
    if kind == "postgresql":
        assert settings.database_url is not None  # store_kind() said so
        return PostgresStore(
            settings.database_url,
            pool_min=settings.database_pool_min,
            pool_max=settings.database_pool_max,
            statement_cache=settings.database_statement_cache,
            timeout_s=settings.database_timeout_s,
        )
    if kind == "supabase":
        assert settings.supabase_url is not None
        assert settings.supabase_key is not None
        return SupabaseStore(
            settings.supabase_url,
            settings.supabase_key.get_secret_value(),
            timeout_s=settings.database_timeout_s,
        )
    return SqliteStore(settings.sqlite_path(), timeout_s=settings.database_timeout_s)
