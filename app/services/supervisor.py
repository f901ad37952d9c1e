"""Owns background tasks: each is named, logged if it fails, awaited or cancelled at shutdown.

Two kinds: tasks (a response, a teardown, a summary), which run once; and services (the event
writer, the lease heartbeat, the summary poll), which must always run: a service that fails is
restarted with backoff, and `/readyz` reports it while it is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from app.database.background import work_context

log = logging.getLogger(__name__)

_RESTART_FIRST_S = 0.05
_RESTART_MAX_S = 5.0
# Cancelled tasks that do not end (awaiting a dead store in a cleanup, say) are given up on
# after this: shutdown must end.
_CANCEL_WAIT_S = 1.0


@dataclass(slots=True)
class ServiceHealth:
    """How a service is doing, for `/readyz` and the metrics."""

    name: str
    restarts: int = 0
    running: bool = False
    last_error: str | None = None


class TaskSupervisor:
    """A home for fire-and-forget work that must never be dropped on the floor."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._services: dict[str, tuple[ServiceHealth, asyncio.Task[None]]] = {}

    def spawn(
        self, coroutine: Coroutine[Any, Any, Any], *, name: str, background: bool = False
    ) -> asyncio.Task[Any]:
        """Run `coroutine` as an owned task (also during shutdown: it is then cancelled in turn).
        `background`: work no client waits for (a teardown, a summary), whose store operations
        give way to live ones (app/database/background.py)."""
        task = asyncio.create_task(
            coroutine, name=name, context=work_context(background=background)
        )
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def spawn_service(
        self, run: Callable[[], Coroutine[Any, Any, None]], *, name: str, background: bool = False
    ) -> ServiceHealth:
        """Run `run()` until it returns; if it fails, log it and run it again after a backoff.
        `background` as for `spawn`."""
        health = ServiceHealth(name)
        task = asyncio.create_task(
            self._keep_running(run, health), name=name, context=work_context(background=background)
        )
        self._services[name] = (health, task)
        return health

    @property
    def running(self) -> int:
        return len(self._tasks)

    @property
    def services(self) -> list[ServiceHealth]:
        return [health for health, _ in self._services.values()]

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def _keep_running(
        self, run: Callable[[], Coroutine[Any, Any, None]], health: ServiceHealth
    ) -> None:
        delay = _RESTART_FIRST_S
        while True:
            health.running = True
            try:
                await run()
                return
            except Exception as e:
                health.running = False
                health.restarts += 1
                health.last_error = f"{type(e).__name__}: {e}"
                log.exception("service %s failed; restarting in %.2f s", health.name, delay)
            finally:
                health.running = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESTART_MAX_S)

    async def stop_service(self, name: str, *, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for a service asked to stop to return, then cancel it."""
        entry = self._services.pop(name, None)
        if entry is None:
            return
        task = entry[1]
        # `wait`, not an await of the task: a service that was cancelled already (the event
        # writer, when its close timed out) must not raise its cancellation into the caller.
        if not task.done():
            await asyncio.wait([task], timeout=timeout_s)
        await _cancel([task])

    async def shutdown(self, *, grace_s: float) -> None:
        """Let running tasks finish within `grace_s`, then cancel the rest; give up on tasks
        that do not end when cancelled. Services stay (see `stop_service`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._tasks and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=remaining)
        # Tasks may spawn others while they wind down; repeat while that makes progress.
        while self._tasks:
            before = set(self._tasks)
            await _cancel(before)
            if self._tasks >= before:
                names = sorted(task.get_name() for task in self._tasks)
                log.error("%d tasks did not end when cancelled: %s", len(names), names)
                return

    async def stop_services(self, *, timeout_s: float) -> None:
        """Cancel every service still running (they were asked to stop first)."""
        for name in list(self._services):
            await self.stop_service(name, timeout_s=timeout_s)


async def _cancel(tasks: set[asyncio.Task[Any]] | list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait (bounded) for them to end."""
    for task in tasks:
        task.cancel()
    pending = [task for task in tasks if not task.done()]
    if pending:
        await asyncio.wait(pending, timeout=_CANCEL_WAIT_S)
