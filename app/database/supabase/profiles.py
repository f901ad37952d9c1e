"""The demo user profiles over REST."""

from __future__ import annotations

from postgrest.types import ReturnMethod
from pydantic import JsonValue

from app.database.supabase.rest import RestClient


class RestProfiles:
    """`ProfileRepository` over REST."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    async def upsert(self, profiles: dict[str, dict[str, JsonValue]]) -> None:
        rows = [{"user_id": user_id, "profile": profile} for user_id, profile in profiles.items()]
        query = self._rest.table("user_profiles").upsert(
            rows, on_conflict="user_id", returning=ReturnMethod.minimal
        )
        await self._rest.run(query, "cannot store user profiles")

    async def get(self, user_id: str) -> dict[str, JsonValue] | None:
        query = self._rest.table("user_profiles").select("profile").eq("user_id", user_id).limit(1)
        rows = await self._rest.run(query, "cannot read the user profile")
        if not rows:
            return None
        profile: dict[str, JsonValue] = rows[0]["profile"]
        return profile
