"""The REST session API as a test sees it: read a session, wait for it to reach a state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.support.waiting import wait_until

Json = dict[str, Any]


async def get_session(http: httpx.AsyncClient, session_id: str) -> Json:
    """`GET /api/sessions/{id}`, which must answer 200."""
    response = await http.get(f"/api/sessions/{session_id}")
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


async def wait_for_session(
    http: httpx.AsyncClient,
    session_id: str,
    check: Callable[[Json], bool],
    *,
    timeout: float = 5.0,
    what: str = "the session to change",
) -> Json:
    """Poll the session until `check` holds; return the session that passed."""
    seen: list[Json] = []

    async def holds() -> bool:
        seen.append(await get_session(http, session_id))
        return check(seen[-1])

    try:
        await wait_until(holds, timeout, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {seen[-1] if seen else None}") from e
    return seen[-1]


async def get_events(http: httpx.AsyncClient, session_id: str, query: str = "") -> list[Json]:
    """`GET /api/sessions/{id}/events?query`, which must answer 200."""
    url = f"/api/sessions/{session_id}/events" + (f"?{query}" if query else "")
    response = await http.get(url)
    assert response.status_code == 200, response.text
    events: list[Json] = response.json()["events"]
    return events
