"""Batched, ordered event writes, off the streaming path, with failures kept to their session.

Streaming never waits for the database; only a user message's acknowledgement does (`commit`).
Events are written in the order they were submitted. A retryable store error (an outage) is
retried with backoff, so nothing submitted is dropped while the store comes back. A refusal
(a lost lease, a conflicting event, a value the store rejects) affects only its session: the
batch is split per session and then per event, everything that can be written is written, and
only the refused session's waiters fail; its conversation is told through `on_refused`, and its
later events are refused at once (a gap in its seqs would follow otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.database.base import EventLog, EventRow, Lease, LeaseLost, StoreError, WriteRefused
from app.services.tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

log = logging.getLogger(__name__)

_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 2.0
# Holdings whose events the store refused, remembered so their later events fail at once.
_DEAD_LEASES_MAX = 10_000

OnRefused = Callable[[Lease, WriteRefused], None]


@dataclass(slots=True)
class _Pending:
    row: EventRow | None  # None marks a flush barrier
    done: asyncio.Future[None] | None
    # The span whose work queued the event (the batch span links to it); None untraced.
    origin: SpanContext | None = None
    # Written (or refused) by the writer. Not `done.done()`: a waiter that gives up cancels
    # its future, and the event must still be written (or spilled).
    settled: bool = False

    def settle(self, error: StoreError | None) -> None:
        self.settled = True
        if self.done is None or self.done.done():
            return
        if error is not None and self.row is not None:
            self.done.set_exception(error)
        else:
            self.done.set_result(None)


class EventWriter:
    """Queues events and writes them in batches, on a short timer or at once when someone waits.

    `run()` is the write loop, owned by the task supervisor (which restarts it if it fails:
    the batch in flight goes back to the head of the queue). `close()` writes what it can
    within a deadline and hands back the rest, to be spilled to disk.
    """

    def __init__(
        self,
        events: EventLog,
        *,
        flush_interval_s: float,
        batch_max: int,
        buffer_max: int,
        on_write: Callable[[float], None] = lambda seconds: None,
        on_refused: OnRefused = lambda lease, error: None,
        tracing: Tracing | None = None,
    ) -> None:
        self._events = events
        self._tracing = tracing or Tracing.disabled()
        self._on_write = on_write
        self._on_refused = on_refused
        self._buffer_max = buffer_max
        self._flush_interval_s = flush_interval_s
        self._batch_max = batch_max
        self._queue: deque[_Pending] = deque()
        self._in_flight: list[_Pending] = []
        self._dead: OrderedDict[Lease, WriteRefused] = OrderedDict()
        self._has_work = asyncio.Event()
        self._urgent = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # Since when the store has been refusing writes retryably (None: it is answering).
        self.failing_since: float | None = None

    # -- what callers use ------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Events not yet committed: waiting, and in the batch being written (or retried)."""
        return len(self._queue) + len(self._in_flight)

    @property
    def full(self) -> bool:
        """The store has been unreachable long enough that the buffer reached its bound:
        new messages must be refused (retryably) rather than accepted and maybe lost."""
        return self.queue_depth >= self._buffer_max

    def set_on_refused(self, on_refused: OnRefused) -> None:
        """Who hears about refused sessions (the hub, which ends their conversations)."""
        self._on_refused = on_refused

    def submit(self, row: EventRow) -> None:
        """Queue an event; it is written within the flush interval."""
        if self._refuse_dead(row, None):
            return
        self._enqueue(_Pending(row, None, self._tracing.origin()))

    def commit(self, row: EventRow) -> asyncio.Future[None]:
        """Write an event now; the future is done once it is committed (`StoreError` if it
        cannot be). Awaiting it with a deadline leaves the write queued (`asyncio.shield`)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._refuse_dead(row, done):
            self._enqueue(_Pending(row, done, self._tracing.origin()), urgent=True)
        return done

    async def flush(self) -> None:
        """Return once every event submitted before this call is committed (or refused)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(None, done), urgent=True)
        await done

    def forget(self, lease: Lease) -> None:
        """The holding ended: no event of it will come again."""
        self._dead.pop(lease, None)

    async def close(self, *, timeout_s: float) -> list[EventRow]:
        """Write everything queued within `timeout_s`, then stop the loop. Returns the events
        that could not be written (the store is down): the caller spills them to disk."""
        self._closing = True
        self._has_work.set()
        self._urgent.set()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=timeout_s)
        if task is not None and not task.done():
            # The store does not take the rest in time: stop (the batch in flight goes back to
            # the queue) and hand everything back.
            task.cancel()
            await asyncio.wait([task])
        unwritten = [pending.row for pending in self._queue if pending.row is not None]
        error = StoreError("the server stopped before the event was stored", retryable=True)
        for pending in self._queue:
            pending.settle(error)
        self._queue.clear()
        return unwritten

    # -- the write loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Write batches until closed and empty. A crash re-queues the batch in flight."""
        self._task = asyncio.current_task()
        while True:
            await self._has_work.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self._flush_interval_s)
            self._urgent.clear()
            self._in_flight = self._take_batch()
            try:
                await self._write(self._in_flight)
            except BaseException:
                unsettled = [p for p in self._in_flight if not p.settled]
                self._queue.extendleft(reversed(unsettled))
                raise
            finally:
                self._in_flight = []
            if not self._queue:
                self._has_work.clear()
                if self._closing:
                    return

    def _enqueue(self, pending: _Pending, *, urgent: bool = False) -> None:
        self._queue.append(pending)
        self._has_work.set()
        if urgent:
            self._urgent.set()

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self._batch_max:
            batch.append(self._queue.popleft())
        return batch

    async def _write(self, batch: list[_Pending]) -> None:
        entries = [p for p in batch if p.row is not None and not self._refuse_dead(p.row, p.done)]
        if entries:
            with self._tracing.store_batch(
                session_ids=(p.row.session_id for p in entries if p.row is not None),
                origins=(p.origin for p in entries),
                size=len(entries),
            ):
                await self._write_isolated(entries)
        for pending in batch:
            if pending.row is None:
                pending.settle(None)  # a barrier: everything before it is settled now

    async def _write_isolated(self, entries: list[_Pending]) -> None:
        """Write the entries; on a refusal, split per session, then per event."""
        if not entries:
            return
        try:
            await self._append([entry.row for entry in entries if entry.row is not None])
        except StoreError as e:
            groups = _by_lease(entries)
            if len(groups) > 1:
                for group in groups:
                    await self._write_isolated(group)
            elif isinstance(e, LeaseLost):
                self._refuse(entries, e)
            else:
                await self._write_one_by_one(entries)
            return
        for entry in entries:
            entry.settle(None)

    async def _write_one_by_one(self, entries: list[_Pending]) -> None:
        """One session's events in seq order: the first refused one and every later one fail
        (writing the later ones would leave a gap in the session's seqs)."""
        for index, entry in enumerate(entries):
            assert entry.row is not None
            try:
                await self._append([entry.row])
            except StoreError as e:
                self._refuse(entries[index:], _as_refusal(e, entry.row))
                return
            entry.settle(None)

    async def _append(self, rows: Sequence[EventRow]) -> None:
        """One append, retried with backoff while the store fails retryably."""
        delay = _RETRY_FIRST_S
        while True:
            started = time.perf_counter()
            try:
                await self._events.append(rows)
            except StoreError as e:
                if not e.retryable:
                    raise
                self.failing_since = self.failing_since or time.monotonic()
                log.warning("event write failed, retrying in %.2f s: %s", delay, e)
                self._tracing.note_retry(e, delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            self.failing_since = None
            self._on_write(time.perf_counter() - started)
            return

    def _refuse(self, entries: list[_Pending], error: WriteRefused) -> None:
        lease = entries[0].row.lease if entries[0].row is not None else None
        if lease is None:
            return
        log.error(
            "the store refused %d events of session %s: %s", len(entries), lease.session_id, error
        )
        self._dead[lease] = error
        while len(self._dead) > _DEAD_LEASES_MAX:
            self._dead.popitem(last=False)
        for entry in entries:
            entry.settle(error)
        self._on_refused(lease, error)

    def _refuse_dead(self, row: EventRow, done: asyncio.Future[None] | None) -> bool:
        """Fail an event of a holding the store already refused; False when it is alive."""
        error = self._dead.get(row.lease)
        if error is None:
            return False
        if done is not None and not done.done():
            done.set_exception(error)
        return True


def _by_lease(entries: list[_Pending]) -> list[list[_Pending]]:
    """The entries grouped per session holding, each group in its original order."""
    groups: dict[Lease, list[_Pending]] = {}
    for entry in entries:
        assert entry.row is not None
        groups.setdefault(entry.row.lease, []).append(entry)
    return list(groups.values())


def _as_refusal(error: StoreError, row: EventRow) -> WriteRefused:
    if isinstance(error, WriteRefused):
        error.session_id = error.session_id or row.session_id
        return error
    refusal = WriteRefused(f"the store refused an event: {error}", session_id=row.session_id)
    refusal.__cause__ = error
    return refusal
