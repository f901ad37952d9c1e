"""The embedded store: SQLite through aiosqlite (its own thread, so the event loop never blocks)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import orjson
from pydantic import JsonValue

from app.database.base import EventRow, LeaseState, SessionCursor, SessionRecord, StoreError
from app.database.migrations import pending, sqlite_statements
from app.protocol import StoredEvent, SummaryStatus, stored_event_adapter

_PING_TIMEOUT_S = 1.0
_BUSY_TIMEOUT_S = 5.0


_SESSION_COLUMNS = (
    "id, owner, created_at, updated_at, model, title, summary, summary_status, summary_seq, "
    "event_count, context_summary, context_summary_seq"
)


def _to_text(moment: datetime) -> str:
    # Fixed width, UTC: text order is time order, so indexes sort correctly.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _from_text(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _now(plus_s: float = 0.0) -> str:
    """The time `plus_s` from now, as stored (lease expiries, job claims)."""
    return _to_text(datetime.now(UTC) + timedelta(seconds=plus_s))


def _retryable(error: sqlite3.Error) -> bool:
    """A locked or busy database may answer later; a broken constraint never will."""
    return not isinstance(error, sqlite3.IntegrityError | sqlite3.ProgrammingError)


def _session_from_row(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        owner=row["owner"],
        created_at=_from_text(row["created_at"]),
        updated_at=_from_text(row["updated_at"]),
        model=row["model"],
        title=row["title"],
        summary=row["summary"],
        summary_status=SummaryStatus(row["summary_status"]),
        summary_seq=row["summary_seq"],
        event_count=row["event_count"],
        context_summary=row["context_summary"],
        context_summary_seq=row["context_summary_seq"],
    )


def _event_params(row: EventRow) -> tuple[str, int, str, str | None, str, str]:
    event = row.event
    message_id = event.id if event.type == "user.message" else None
    data = stored_event_adapter.dump_json(event).decode()
    return (row.session_id, event.seq, event.type, message_id, _to_text(event.created_at), data)


class SqliteStore:
    """`Store` on one SQLite file (or `:memory:`)."""

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        # One connection serves everyone: a write and its commit must not interleave with another's.
        self._write_lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the SQLite store is not open", retryable=False)
        return self._db

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self._path, timeout=_BUSY_TIMEOUT_S)
        except sqlite3.Error as e:
            raise StoreError(
                f"cannot open SQLite database {self._path!r}: {e}", retryable=False
            ) from e
        self._db.row_factory = sqlite3.Row
        await self._db.execute("pragma journal_mode = wal")
        await self._db.execute("pragma synchronous = normal")
        await self._db.execute("pragma foreign_keys = on")
        await self._migrate()

    async def _migrate(self) -> None:
        """Bring the schema to the latest version in one transaction (rows are kept)."""
        await self.db.execute(
            "create table if not exists schema_version (version integer not null, "
            "applied_at text not null)"
        )
        await self.db.commit()
        await self.db.execute("begin immediate")  # one process migrates; others wait, then see it
        try:
            cursor = await self.db.execute("select coalesce(max(version), 0) from schema_version")
            row = await cursor.fetchone()
            for step in pending("sqlite", int(row[0]) if row else 0):
                for statement in sqlite_statements(step.sql):
                    await self.db.execute(statement)
                await self.db.execute(
                    "insert into schema_version values (?, ?)",
                    (step.version, _to_text(datetime.now(UTC))),
                )
            await self.db.commit()
        except BaseException:
            await self.db.rollback()
            raise

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        # Ready means writable. A separate short-lived connection with a short busy timeout
        # probes the write lock, so a probe that waits never leaves the main connection in a
        # half-started transaction.
        if self._db is None:
            raise StoreError("the SQLite store is not open", retryable=False)
        try:
            async with aiosqlite.connect(self._path, timeout=_PING_TIMEOUT_S) as probe:
                await probe.execute("begin immediate")
                await probe.execute("rollback")
        except sqlite3.Error as e:
            raise StoreError(f"SQLite does not accept writes: {e}", retryable=True) from e

    async def create_session(self, record: SessionRecord) -> None:
        await self._write(
            f"insert into sessions ({_SESSION_COLUMNS}) values ({', '.join('?' * 12)})",
            (
                record.id,
                record.owner,
                _to_text(record.created_at),
                _to_text(record.updated_at),
                record.model,
                record.title,
                record.summary,
                record.summary_status.value,
                record.summary_seq,
                record.event_count,
                record.context_summary,
                record.context_summary_seq,
            ),
        )

    async def get_session(self, session_id: str) -> SessionRecord | None:
        cursor = await self.db.execute(
            f"select {_SESSION_COLUMNS} from sessions where id = ?", (session_id,)
        )
        row = await cursor.fetchone()
        return None if row is None else _session_from_row(row)

    async def list_sessions(
        self, *, limit: int, before: SessionCursor | None, owner: str | None
    ) -> list[SessionRecord]:
        clauses: list[str] = []
        params: list[object] = []
        if owner is not None:
            clauses.append("owner = ?")
            params.append(owner)
        if before is not None:
            clauses.append("(created_at, id) < (?, ?)")
            params += [_to_text(before.created_at), before.id]
        where = f"where {' and '.join(clauses)}" if clauses else ""
        cursor = await self.db.execute(
            f"select {_SESSION_COLUMNS} from sessions {where} "
            "order by created_at desc, id desc limit ?",
            (*params, limit),
        )
        return [_session_from_row(row) for row in await cursor.fetchall()]

    async def delete_session(self, session_id: str) -> bool:
        cursor = await self._write("delete from sessions where id = ?", (session_id,))
        return cursor.rowcount > 0

    async def append_events(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        params = [_event_params(row) for row in rows]
        async with self._write_lock:
            try:
                await self.db.executemany(
                    "insert into session_events "
                    "(session_id, seq, type, message_id, created_at, data) "
                    "values (?, ?, ?, ?, ?, ?) on conflict (session_id, seq) do nothing",
                    params,
                )
                await self._touch_sessions(rows)
                await self.db.commit()
            except sqlite3.Error as e:
                await self.db.rollback()
                raise StoreError(f"cannot store events: {e}", retryable=_retryable(e)) from e

    async def _touch_sessions(self, rows: Sequence[EventRow]) -> None:
        latest: dict[str, tuple[int, str]] = {}
        for row in rows:
            seq, moment = row.event.seq, _to_text(row.event.created_at)
            known = latest.get(row.session_id)
            latest[row.session_id] = max(known, (seq, moment)) if known else (seq, moment)
        await self.db.executemany(
            "update sessions set event_count = max(event_count, ?), "
            "updated_at = max(updated_at, ?) where id = ?",
            [(seq, moment, session_id) for session_id, (seq, moment) in latest.items()],
        )

    async def list_events(
        self, session_id: str, *, after_seq: int, limit: int | None
    ) -> list[StoredEvent]:
        cursor = await self.db.execute(
            "select data from session_events where session_id = ? and seq > ? order by seq limit ?",
            (session_id, after_seq, -1 if limit is None else limit),
        )
        return [stored_event_adapter.validate_json(row[0]) for row in await cursor.fetchall()]

    async def last_seq(self, session_id: str) -> int:
        cursor = await self.db.execute(
            "select coalesce(max(seq), 0) from session_events where session_id = ?", (session_id,)
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def find_user_message(self, session_id: str, message_id: str) -> StoredEvent | None:
        cursor = await self.db.execute(
            "select data from session_events where session_id = ? and message_id = ?",
            (session_id, message_id),
        )
        row = await cursor.fetchone()
        return None if row is None else stored_event_adapter.validate_json(row[0])

    async def set_summary_status(self, session_id: str, status: SummaryStatus) -> None:
        await self._write(
            "update sessions set summary_status = ? where id = ?", (status.value, session_id)
        )

    async def save_summary(self, session_id: str, *, summary: str, summary_seq: int) -> None:
        await self._write(
            "update sessions set summary = ?, summary_seq = ?, summary_status = 'done' "
            "where id = ?",
            (summary, summary_seq, session_id),
        )

    async def set_title(self, session_id: str, title: str) -> None:
        await self._write(
            "update sessions set title = ?, title_status = 'done' where id = ?", (title, session_id)
        )

    async def save_context_summary(self, session_id: str, *, summary: str, upto_seq: int) -> None:
        await self._write(
            "update sessions set context_summary = ?, context_summary_seq = ? where id = ?",
            (summary, upto_seq, session_id),
        )

    async def sessions_with_summary_status(self, statuses: Sequence[SummaryStatus]) -> list[str]:
        marks = ", ".join("?" for _ in statuses)
        cursor = await self.db.execute(
            f"select id from sessions where summary_status in ({marks}) order by updated_at",
            [status.value for status in statuses],
        )
        return [row[0] for row in await cursor.fetchall()]

    async def sessions_with_unsummarized_events(self) -> list[str]:
        cursor = await self.db.execute(
            "select id from sessions s where event_count > summary_seq "
            "and summary_status in ('none', 'done') and not exists (select 1 from "
            "session_leases l where l.session_id = s.id and l.expires_at > ?) "
            "order by updated_at",
            (_now(),),
        )
        return [row[0] for row in await cursor.fetchall()]

    async def acquire_lease(
        self, session_id: str, *, holder: str, ttl_s: float
    ) -> LeaseState | None:
        # Several worker processes may share the file; the upsert is one atomic statement.
        cursor = await self._write(
            "insert into session_leases (session_id, holder, state, expires_at) "
            "values (?, ?, 'live', ?) on conflict (session_id) do update set "
            "holder = excluded.holder, state = 'live', expires_at = excluded.expires_at "
            "where session_leases.expires_at <= ? or session_leases.holder = excluded.holder",
            (session_id, holder, _now(ttl_s), _now()),
        )
        if cursor.rowcount > 0:
            return None
        found = await self.db.execute(
            "select state from session_leases where session_id = ?", (session_id,)
        )
        row = await found.fetchone()
        return LeaseState.CLOSING if row is None else LeaseState(row[0])

    async def mark_lease_closing(self, session_id: str, *, holder: str) -> None:
        await self._write(
            "update session_leases set state = 'closing' where session_id = ? and holder = ?",
            (session_id, holder),
        )

    async def release_lease(self, session_id: str, *, holder: str) -> None:
        await self._write(
            "delete from session_leases where session_id = ? and holder = ?", (session_id, holder)
        )

    async def renew_leases(
        self, session_ids: Sequence[str], *, holder: str, ttl_s: float
    ) -> set[str]:
        if not session_ids:
            return set()
        marks = ", ".join("?" for _ in session_ids)
        rows = await self._write_returning(
            f"update session_leases set expires_at = ? where holder = ? "
            f"and session_id in ({marks}) returning session_id",
            (_now(ttl_s), holder, *session_ids),
        )
        return {row[0] for row in rows}

    async def claim_summary(self, session_id: str, *, stale_after_s: float) -> bool:
        cursor = await self._write(
            "update sessions set summary_status = 'running', summary_claimed_at = ? "
            "where id = ? and (summary_status = 'pending' or (summary_status = 'running' "
            "and coalesce(summary_claimed_at, '') < ?))",
            (_now(), session_id, _now(-stale_after_s)),
        )
        return cursor.rowcount > 0

    async def claim_title(self, session_id: str, *, stale_after_s: float) -> bool:
        cursor = await self._write(
            "update sessions set title_status = 'running', title_claimed_at = ? "
            "where id = ? and title is null and (title_status in ('none', 'pending') or "
            "(title_status = 'running' and coalesce(title_claimed_at, '') < ?))",
            (_now(), session_id, _now(-stale_after_s)),
        )
        return cursor.rowcount > 0

    async def sessions_with_stale_titles(self, *, stale_after_s: float) -> list[str]:
        cursor = await self.db.execute(
            "select id from sessions where title is null and (title_status = 'pending' or "
            "(title_status = 'running' and coalesce(title_claimed_at, '') < ?)) "
            "order by updated_at",
            (_now(-stale_after_s),),
        )
        return [row[0] for row in await cursor.fetchall()]

    async def upsert_user_profiles(self, profiles: dict[str, dict[str, JsonValue]]) -> None:
        async with self._write_lock:
            await self.db.executemany(
                "insert into user_profiles (user_id, profile) values (?, ?) "
                "on conflict (user_id) do update set profile = excluded.profile",
                [
                    (user_id, orjson.dumps(profile).decode())
                    for user_id, profile in profiles.items()
                ],
            )
            await self.db.commit()

    async def get_user_profile(self, user_id: str) -> dict[str, JsonValue] | None:
        cursor = await self.db.execute(
            "select profile from user_profiles where user_id = ?", (user_id,)
        )
        row = await cursor.fetchone()
        if row is None:
            return None
        profile: dict[str, JsonValue] = orjson.loads(row[0])
        return profile

    async def _write_returning(self, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
        """A write with a RETURNING clause: its rows are read before the commit."""
        async with self._write_lock:
            try:
                cursor = await self.db.execute(sql, params)
                rows = list(await cursor.fetchall())
                await self.db.commit()
            except sqlite3.Error as e:
                await self.db.rollback()
                raise StoreError(f"SQLite write failed: {e}", retryable=_retryable(e)) from e
        return rows

    async def _write(self, sql: str, params: Sequence[object]) -> aiosqlite.Cursor:
        async with self._write_lock:
            try:
                cursor = await self.db.execute(sql, params)
                await self.db.commit()
            except sqlite3.Error as e:
                await self.db.rollback()
                raise StoreError(f"SQLite write failed: {e}", retryable=_retryable(e)) from e
        return cursor
