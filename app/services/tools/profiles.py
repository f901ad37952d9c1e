"""User profiles: the seed's example tool, answering from demo profiles kept in the store."""

from __future__ import annotations

from pydantic import JsonValue

from app.services.tools.registry import ToolContext, ToolError

DEMO_PROFILES: dict[str, dict[str, JsonValue]] = {
    "123": {
        "user_id": "123",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "plan": "pro",
        "member_since": "2023-03-14",
        "location": "London, UK",
        "preferences": {"language": "en", "theme": "dark"},
    },
    "456": {
        "user_id": "456",
        "name": "Grace Hopper",
        "email": "grace@example.com",
        "plan": "free",
        "member_since": "2024-09-01",
        "location": "Arlington, VA, USA",
        "preferences": {"language": "en", "theme": "light"},
    },
}


async def fetch_user_profile(context: ToolContext, user_id: str) -> dict[str, JsonValue]:
    """Fetch a user's profile (name, email, plan, location, preferences) by user id.

    Args:
        user_id: The user's id, for example "123".
    """
    profile = await context.profiles.get(user_id.strip())
    if profile is None:
        raise ToolError(f"no user with id {user_id!r}")
    return profile
