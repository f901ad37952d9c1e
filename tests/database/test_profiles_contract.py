"""The profile repository's contract, on SQLite, PostgreSQL and Supabase (fake PostgREST)."""

from __future__ import annotations

from pydantic import JsonValue

from app.database.base import Store


async def test_an_unknown_user_has_no_profile(store: Store) -> None:
    await store.profiles.upsert({"7": {"name": "Grace"}})
    assert await store.profiles.get("8") is None
    assert await store.profiles.get("") is None


async def test_profiles_upserted_together_read_back(store: Store) -> None:
    await store.profiles.upsert(
        {"7": {"name": "Grace", "tags": ["navy", "cobol"]}, "8": {"name": "Alan"}}
    )
    assert await store.profiles.get("7") == {"name": "Grace", "tags": ["navy", "cobol"]}
    assert await store.profiles.get("8") == {"name": "Alan"}


async def test_an_upsert_replaces_the_whole_profile_of_its_users_only(store: Store) -> None:
    await store.profiles.upsert({"7": {"name": "Grace", "tags": ["navy"]}, "8": {"name": "Alan"}})
    await store.profiles.upsert({"7": {"name": "Grace Hopper", "rank": 3}})
    assert await store.profiles.get("7") == {"name": "Grace Hopper", "rank": 3}
    assert await store.profiles.get("8") == {"name": "Alan"}


async def test_a_profile_keeps_nested_json_and_unicode(store: Store) -> None:
    profile: dict[str, JsonValue] = {
        "name": 'Zoë 🎉 "quoted" \\ back',
        "address": {"city": "Zürich", "lines": ["1", "2"], "geo": {"lat": 47.37, "lon": 8.54}},
        "active": True,
        "manager": None,
        "score": -12,
    }
    await store.profiles.upsert({"ünï": profile})
    assert await store.profiles.get("ünï") == profile


async def test_an_upsert_of_no_profiles_changes_nothing(store: Store) -> None:
    await store.profiles.upsert({"7": {"name": "Grace"}})
    await store.profiles.upsert({})
    assert await store.profiles.get("7") == {"name": "Grace"}
