"""Owns background tasks: each is named, logged if it fails, awaited or cancelled at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSupervisor:
    """A home for fire-and-forget work that must never be dropped on the floor."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run `coroutine` as an owned task (also during shutdown: it is then cancelled in turn)."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    @property
    def running(self) -> int:
        return len(self._tasks)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def shutdown(self, *, grace_s: float) -> None:
        """Let running tasks finish within `grace_s`, then cancel and await the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._tasks and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=remaining)
        while self._tasks:
            # Tasks may spawn others while they wind down; repeat until none is left.
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await asyncio.sleep(0)
