"""Bounded polling of a condition: for state that is only observable by asking again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

POLL_INTERVAL_S = 0.02


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0, *, what: str = "condition"
) -> None:
    """Return as soon as `predicate()` is true; fail the test if it is still false at `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)
