"""User profiles: the seed's example tool, answering from demo profiles kept in the store."""

from __future__ import annotations

from typing import Literal

from pydantic import JsonValue

from app.services.tools.registry import ToolContext, ToolError, requires_approval

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


@requires_approval
async def update_user_plan(
    context: ToolContext, user_id: str, plan: Literal["free", "pro", "team"]
) -> dict[str, JsonValue]:
    """Change a user's subscription plan. It changes data, so it runs only once the person
    approves it.

    Args:
        user_id: The user's id, for example "123".
        plan: The new plan: "free", "pro" or "team".
    """
    user_id = user_id.strip()
    profile = await context.profiles.get(user_id)
    if profile is None:
        raise ToolError(f"no user with id {user_id!r}")
    previous = profile.get("plan")
    await context.profiles.upsert({user_id: {**profile, "plan": plan}})
    return {"user_id": user_id, "plan": plan, "previous_plan": previous}
