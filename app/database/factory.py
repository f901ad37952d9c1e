"""Chooses the store from the settings: the one place that knows every backend."""

from __future__ import annotations

from app.database.base import Store
from app.database.sqlite import SqliteStore
from app.settings import Settings


def create_store(settings: Settings) -> Store:
    """The store `DATABASE_URL` names (validated by the settings)."""
    return SqliteStore(settings.sqlite_path())
