"""The spill file: events the store could not take before the process stopped, written to local
disk at shutdown and replayed into the store, exactly once, by the next start in the same slot.

One JSON object a line: the session, the writer's lease (holder, epoch) and the event. Replaying
writes each session's events under the lease they were made with, which is still the session's
current holding unless another instance took the session over meanwhile: then the events are
refused (they would conflict with what that instance wrote) and kept in `<spill>.rejected` for
an operator, never silently dropped. Identical rows already stored are skipped, so a replay
interrupted halfway is simply replayed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import orjson
from pydantic_core import to_json

from app.database.base import EventLog, EventRow, Lease, StoreError, WriteRefused
from app.protocol import stored_event_adapter

log = logging.getLogger(__name__)

# Retries of a replay the store refuses retryably before the start fails (the slot keeps its
# spill file, so the next start tries again).
_REPLAY_ATTEMPTS = 5
_REPLAY_RETRY_S = 1.0
REPLAY_BATCH = 500


def write_spill(path: Path, rows: Sequence[EventRow]) -> None:
    """Append the rows to the spill file and make them durable."""
    _append_lines(path, [_line(row) for row in rows])


def _append_lines(path: Path, lines: Sequence[bytes]) -> None:
    if not lines:
        return
    with path.open("ab") as spill:
        for line in lines:
            spill.write(line if line.endswith(b"\n") else line + b"\n")
        spill.flush()
        os.fsync(spill.fileno())


def _line(row: EventRow) -> bytes:
    lease = row.lease
    event = stored_event_adapter.dump_python(row.event, mode="json")
    record = {"session_id": lease.session_id, "holder": lease.holder, "epoch": lease.epoch}
    # pydantic's encoder: tool results may hold integers beyond 64 bits, which orjson refuses.
    return to_json(record | {"event": event}) + b"\n"


def read_spill(path: Path) -> tuple[list[EventRow], list[bytes]]:
    """The rows of a spill file (none when there is no file), and the lines that are none: the
    last line is cut short when the process was killed while it spilled."""
    if not path.exists():
        return [], []
    rows: list[EventRow] = []
    unreadable: list[bytes] = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(_row(line))
        except (ValueError, KeyError, TypeError):  # JSON and validation errors are ValueErrors
            unreadable.append(line)
    return rows, unreadable


def _row(line: bytes) -> EventRow:
    record = orjson.loads(line)
    lease = Lease(record["session_id"], record["holder"], int(record["epoch"]))
    return EventRow(lease, stored_event_adapter.validate_python(record["event"]))


async def replay_spill(path: Path, events: EventLog) -> int:
    """Write a predecessor's spilled events into the store, then remove the file. Returns how
    many were replayed; refused ones, and lines that are not an event, go to `<path>.rejected`
    (a torn line must not stop every later start)."""
    rows, unreadable = await asyncio.to_thread(read_spill, path)
    if unreadable:
        rejected = path.with_suffix(".rejected")
        log.error("%d lines of %s are not events; kept in %s", len(unreadable), path, rejected)
        await asyncio.to_thread(_append_lines, rejected, unreadable)
    replayed = 0
    for group in _by_lease(rows):
        for start in range(0, len(group), REPLAY_BATCH):
            batch = group[start : start + REPLAY_BATCH]
            if await _replay(batch, events, rejected=path.with_suffix(".rejected")):
                replayed += len(batch)
    # Only now: a replay cut short is replayed again (identical rows are skipped).
    await asyncio.to_thread(path.unlink, missing_ok=True)
    return replayed


async def _replay(batch: list[EventRow], events: EventLog, *, rejected: Path) -> bool:
    for attempt in range(_REPLAY_ATTEMPTS):
        try:
            await events.append(batch)
            return True
        except WriteRefused as e:
            log.error(
                "spilled events of session %s were refused (%s); kept in %s",
                batch[0].session_id,
                e,
                rejected,
            )
            await asyncio.to_thread(write_spill, rejected, batch)
            return False
        except StoreError:
            if attempt == _REPLAY_ATTEMPTS - 1:
                raise
            await asyncio.sleep(_REPLAY_RETRY_S)  # the store just opened: give it a moment
    return False


def _by_lease(rows: list[EventRow]) -> list[list[EventRow]]:
    groups: dict[Lease, list[EventRow]] = {}
    for row in rows:
        groups.setdefault(row.lease, []).append(row)
    return list(groups.values())
