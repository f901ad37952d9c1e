"""The demo user profiles in SQL (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import orjson
from pydantic import JsonValue

from app.database.sql import SqlRunner


class SqlProfiles:
    """`ProfileRepository` in SQL: one JSON document per user id."""

    def __init__(self, runner: SqlRunner) -> None:
        self._runner = runner

    async def upsert(self, profiles: dict[str, dict[str, JsonValue]]) -> None:
        await self._runner.write_many(
            "insert into user_profiles (user_id, profile) values (:user_id, :profile) "
            "on conflict (user_id) do update set profile = excluded.profile",
            [
                {"user_id": user_id, "profile": orjson.dumps(profile).decode()}
                for user_id, profile in profiles.items()
            ],
        )

    async def get(self, user_id: str) -> dict[str, JsonValue] | None:
        rows = await self._runner.read(
            "select profile from user_profiles where user_id = :user_id", {"user_id": user_id}
        )
        if not rows:
            return None
        profile: dict[str, JsonValue] = orjson.loads(rows[0]["profile"])
        return profile
