"""Batched, ordered event writes, off the streaming path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from app.database.base import EventRow, Store, StoreError
from app.protocol import StoredEvent

log = logging.getLogger(__name__)

_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 2.0


@dataclass(slots=True)
class _Pending:
    row: EventRow | None  # None marks a flush barrier
    done: asyncio.Future[None] | None


class EventWriter:
    """Queues events and writes them in batches, on a short timer or at once when someone waits.

    Streaming never waits for the database; only a user message's acknowledgement does
    (`commit`). Events are written in the order they were submitted; a retryable store error
    is retried with backoff, so nothing submitted is dropped while the store comes back.
    """

    def __init__(
        self,
        store: Store,
        *,
        flush_interval_s: float,
        batch_max: int,
        buffer_max: int,
        on_write: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._store = store
        self._on_write = on_write
        self._buffer_max = buffer_max
        self._flush_interval_s = flush_interval_s
        self._batch_max = batch_max
        self._queue: deque[_Pending] = deque()
        self._has_work = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0

    @property
    def queue_depth(self) -> int:
        """Events not yet committed: waiting, and in the batch being written (or retried)."""
        return len(self._queue) + self._in_flight

    @property
    def full(self) -> bool:
        """The store has been unreachable long enough that the buffer reached its bound:
        new messages must be refused (retryably) rather than accepted and maybe lost."""
        return self.queue_depth >= self._buffer_max

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-writer")

    def submit(self, session_id: str, event: StoredEvent) -> None:
        """Queue an event; it is written within the flush interval."""
        self._enqueue(_Pending(EventRow(session_id, event), None))

    async def commit(self, session_id: str, event: StoredEvent) -> None:
        """Write an event now; return once it is committed (`StoreError` if it cannot be)."""
        done = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(EventRow(session_id, event), done), urgent=True)
        await done

    async def flush(self) -> None:
        """Return once every event submitted before this call is committed."""
        done = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(None, done), urgent=True)
        await done

    async def close(self) -> None:
        """Write everything queued, then stop."""
        if self._task is None:
            return
        if not self._task.done():
            await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def _enqueue(self, pending: _Pending, *, urgent: bool = False) -> None:
        self._queue.append(pending)
        self._has_work.set()
        if urgent:
            self._urgent.set()

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self._flush_interval_s)
            self._urgent.clear()
            await self._write_batch()
            if not self._queue:
                self._has_work.clear()

    async def _write_batch(self) -> None:
        batch = self._take_batch()
        rows = [pending.row for pending in batch if pending.row is not None]
        self._in_flight = len(rows)
        try:
            await self._write_rows(batch, rows)
        finally:
            self._in_flight = 0

    async def _write_rows(self, batch: list[_Pending], rows: list[EventRow]) -> None:
        delay = _RETRY_FIRST_S
        while True:
            try:
                started = time.perf_counter()
                await self._store.append_events(rows)
                self._on_write(time.perf_counter() - started)
                break
            except StoreError as e:
                if not e.retryable:
                    log.error("dropping %d events the store refused: %s", len(rows), e)
                    _settle(batch, e)
                    return
                log.warning("event write failed, retrying in %.2f s: %s", delay, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
        _settle(batch, None)

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self._batch_max:
            batch.append(self._queue.popleft())
        return batch


def _settle(batch: list[_Pending], error: StoreError | None) -> None:
    for pending in batch:
        if pending.done is None or pending.done.done():
            continue
        if error is not None and pending.row is not None:
            pending.done.set_exception(error)
        else:
            pending.done.set_result(None)
