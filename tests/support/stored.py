"""What a server stored, as a test reads it: the events (polled), a profile's plan, whether the
history is whole, and a model request's messages in short."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from pydantic import JsonValue

from app.database.factory import create_store
from tests.support.rest import Json, get_events
from tests.support.server import RunningServer
from tests.support.waiting import wait_until


async def stored_events(
    http: httpx.AsyncClient,
    session_id: str,
    check: Callable[[list[Json]], bool] = lambda events: True,
    *,
    timeout: float = 5.0,
    what: str = "the stored events",
) -> list[Json]:
    """The session's stored events once `check` holds on them (polled)."""
    seen: list[list[Json]] = [[]]

    async def holds() -> bool:
        seen[0] = await get_events(http, session_id)
        return check(seen[0])

    try:
        await wait_until(holds, timeout, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {seen[0]}") from e
    return seen[0]


def ends_with(event_type: str, count: int = 1) -> Callable[[list[Json]], bool]:
    """A check: the log's last event has this type, and the type occurs `count` times."""

    def check(events: list[Json]) -> bool:
        return (
            bool(events)
            and events[-1]["type"] == event_type
            and sum(e["type"] == event_type for e in events) == count
        )

    return check


async def plan_of(server: RunningServer, user_id: str) -> JsonValue:
    """The user's plan as the server's store holds it (read with a store of its own)."""
    store = create_store(server.settings)
    await store.open()
    try:
        profile = await store.profiles.get(user_id)
    finally:
        await store.close()
    assert profile is not None
    return profile["plan"]


def assert_history_valid(events: list[Json]) -> None:
    """`seq` 1..N, and every stored tool call closed by exactly one result."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    calls = [e["call_id"] for e in events if e["type"] == "tool.call"]
    results = [e["call_id"] for e in events if e["type"] == "tool.result"]
    assert sorted(calls) == sorted(results), events
    assert len(set(results)) == len(results), events


def chat_roles(messages: list[dict[str, Any]]) -> list[str]:
    """The roles of a model request's messages, with the user's text: `user:<text>`."""
    return [f"user:{m['content']}" if m["role"] == "user" else m["role"] for m in messages]
