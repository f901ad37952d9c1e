"""Store work of background tasks goes a few operations at a time.

A burst of background work (a hundred sessions ending at once: their teardowns, summaries and
titles) would otherwise put hundreds of store operations in front of a live request's write:
SQLite has one writer and serves it in arrival order, a PostgreSQL pool hands out its few
connections in arrival order. Measured in `make bench`'s background phase, a new session's first
message waited 20 to 40 ms behind teardowns. So a task started as background work (the supervisor's
`background=True`) runs in a context marked so, and each store's gate lets only `slots` of those
operations in at once; a live operation passes the gate without waiting. A live write then waits
for at most `slots` background operations, and background work still goes on, one behind the
other, however much of it there is.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_IS_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "store_work_is_background", default=False
)


def work_context(*, background: bool) -> contextvars.Context | None:
    """The context of a new task whose store operations count as background work, or as live
    work (a live task started by a background one is live); None (the caller's own, not
    copied) when the caller's already says so."""
    if _IS_BACKGROUND.get() == background:
        return None
    context = contextvars.copy_context()
    context.run(_IS_BACKGROUND.set, background)
    return context


class BackgroundGate:
    """At most `slots` background store operations at once; live ones are never held here.

    A gated operation must not start another gated one inside it (it would wait for itself):
    each store applies the gate once, where it takes its connection.
    """

    def __init__(self, slots: int) -> None:
        self._slots = asyncio.Semaphore(slots)

    @asynccontextmanager
    async def passage(self) -> AsyncIterator[None]:
        if not _IS_BACKGROUND.get():
            yield
            return
        async with self._slots:
            yield
