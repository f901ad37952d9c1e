"""The event log over REST: appends through the schema's `append_session_events` function (the
same one the PostgreSQL store calls), reads paged by seq."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from app.database.base import EventConflict, EventRow, LeaseLost
from app.database.postgres import append_row
from app.database.supabase.rest import INSERT_ROWS, PAGE_ROWS, RestClient, as_uuid
from app.protocol import StoredEvent, stored_event_adapter


class RestEventLog:
    """`EventLog` over REST."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    async def append(self, rows: Sequence[EventRow]) -> None:
        body = [append_row(row) for row in rows]
        # One request is one transaction; a batch larger than INSERT_ROWS is several. Each is
        # idempotent (identical rows are skipped), so a retry after a partial failure completes
        # the batch without duplicates.
        for start in range(0, len(body), INSERT_ROWS):
            chunk = body[start : start + INSERT_ROWS]
            # The client sends any JSON; its annotation says `str` values only.
            arguments = cast("dict[str, str]", {"events": chunk})
            query = self._rest.client.rpc("append_session_events", arguments)
            try:
                await self._rest.run(query, "cannot store events")
            except (LeaseLost, EventConflict) as e:
                sessions = {row["session_id"] for row in chunk}
                e.session_id = sessions.pop() if len(sessions) == 1 else None
                raise

    async def read(
        self, session_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        key = as_uuid(session_id)
        if key is None:
            return []
        events: list[StoredEvent] = []
        while limit is None or len(events) < limit:
            want = PAGE_ROWS if limit is None else min(PAGE_ROWS, limit - len(events))
            query = (
                self._rest.table("session_events")
                .select("seq,data")
                .eq("session_id", key)
                .gt("seq", after_seq)
                .order("seq")
                .limit(want)
            )
            rows = await self._rest.run(query, "cannot read events")
            events += [stored_event_adapter.validate_python(row["data"]) for row in rows]
            if len(rows) < want:
                break
            after_seq = int(rows[-1]["seq"])  # the next page starts after the last seq seen
        return events
