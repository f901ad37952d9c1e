"""Sessions and events made to order for the store tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.database.base import EventRow, Lease, SessionRecord, Store
from app.protocol import (
    AssistantMessageEvent,
    ResponseStatus,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def session_record(
    *, at: datetime = T0, owner: str | None = None, session_id: str | None = None
) -> SessionRecord:
    return SessionRecord(
        id=session_id or str(uuid.uuid4()), created_at=at, updated_at=at, model="m", owner=owner
    )


def user_message(seq: int, text: str, *, message_id: str | None = None) -> UserMessageEvent:
    return UserMessageEvent(
        seq=seq, created_at=T0 + timedelta(seconds=seq), id=message_id or f"msg-{seq}", text=text
    )


def assistant_message(seq: int, text: str) -> AssistantMessageEvent:
    return AssistantMessageEvent(
        seq=seq,
        created_at=T0 + timedelta(seconds=seq),
        response_id=f"resp-{seq}",
        status=ResponseStatus.COMPLETED,
        text=text,
        finish_reason="stop",
        usage={"completion_tokens": 1, "total_tokens": 3},
        model="m",
    )


def tool_call(seq: int) -> ToolCallEvent:
    return ToolCallEvent(
        seq=seq,
        created_at=T0 + timedelta(seconds=seq),
        response_id="resp-t",
        call_id="call-1",
        name="calculate",
        arguments={"expression": "1+1", "nested": {"list": [1, 2.5, None, "x"]}},
    )


def tool_result(seq: int) -> ToolResultEvent:
    return ToolResultEvent(
        seq=seq,
        created_at=T0 + timedelta(seconds=seq),
        response_id="resp-t",
        call_id="call-1",
        name="calculate",
        ok=True,
        result=2,
    )


def rows_of(lease: Lease, *events: StoredEvent) -> list[EventRow]:
    """The events as written by the holder of `lease`."""
    return [EventRow(lease, event) for event in events]


HOLDER = "instance-a"


async def created(store: Store, **options: object) -> SessionRecord:
    """A new session in the store."""
    record = session_record(**options)  # type: ignore[arg-type]
    await store.sessions.create(record)
    return record


async def leased(store: Store, session_id: str, *, holder: str = HOLDER) -> Lease:
    """Take the session's lease (it must be free)."""
    lease = await store.leases.acquire(session_id, holder=holder, ttl_s=60)
    assert isinstance(lease, Lease), lease
    return lease


async def leased_session(store: Store, **options: object) -> tuple[SessionRecord, Lease]:
    """A new session and its lease, ready for events."""
    record = await created(store, **options)
    return record, await leased(store, record.id)
