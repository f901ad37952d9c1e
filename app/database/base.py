"""The store's seams: one small protocol per concept, the records they trade in, and their errors.

A `Store` bundles seven seams, each implemented for SQLite, PostgreSQL and Supabase (REST):

- `EventLog`: a session's events, appended by the writer that holds the session's lease (fenced);
- `SessionRepository`: the session rows (create, read with the live flag, list, delete);
- `LeaseRepository`: one live connection per session across instances, with an epoch per holding;
- `JobClaims`: summary and title jobs, claimed with a token that every later write checks;
- `ProfileRepository`: the demo profiles behind the `fetch_user_profile` tool;
- `UsageRepository`: what each owner used (tokens per day, new sessions per hour, live sessions);
- `RetentionRepository`: the sweep of empty and idle sessions, claimed by one instance at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import JsonValue

from app.protocol import StoredEvent, SummaryStatus


class StoreError(Exception):
    """A store operation failed; `retryable` says whether trying again may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class MissingRow(StoreError):
    """A write referred to a row that does not exist (a session deleted meanwhile)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class WriteRefused(StoreError):
    """The store refused events of one session for good: trying again cannot help."""

    def __init__(self, message: str, *, session_id: str | None = None) -> None:
        super().__init__(message, retryable=False)
        self.session_id = session_id


class LeaseLost(WriteRefused):
    """The writer no longer holds the session's lease (another instance took it, it was released,
    or the session was deleted): its events must not be stored."""


class EventConflict(WriteRefused):
    """A different event is already stored at that `(session, seq)` (or with that message id)."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One row of `sessions`."""

    id: str
    created_at: datetime
    updated_at: datetime
    model: str
    owner: str | None = None
    title: str | None = None
    summary: str | None = None
    summary_status: SummaryStatus = SummaryStatus.NONE
    # Last event seq the stored summary covers, so a resumed session is re-summarized incrementally.
    summary_seq: int = 0
    # Equals the last seq: seqs are gapless from 1.
    event_count: int = 0
    # The rolling summary that stands in for events 1..context_summary_seq in model requests.
    context_summary: str | None = None
    context_summary_seq: int = 0
    # Read only: a client is connected to the session on some instance (its lease is live).
    live: bool = False


# The columns of a session row, as every store reads and writes them (`live` is computed).
SESSION_COLUMNS = (
    "id",
    "owner",
    "created_at",
    "updated_at",
    "model",
    "title",
    "summary",
    "summary_status",
    "summary_seq",
    "event_count",
    "context_summary",
    "context_summary_seq",
)


class Row(Protocol):
    """A result row as every driver gives it: columns by name."""

    def __getitem__(self, key: str, /) -> Any: ...


def session_from_row(
    row: Row, *, read_time: Callable[[Any], datetime], live: bool
) -> SessionRecord:
    """A session row of any store as a record; `read_time` turns the store's times into
    datetimes."""
    return SessionRecord(
        id=str(row["id"]),
        owner=row["owner"],
        created_at=read_time(row["created_at"]),
        updated_at=read_time(row["updated_at"]),
        model=row["model"],
        title=row["title"],
        summary=row["summary"],
        summary_status=SummaryStatus(row["summary_status"]),
        summary_seq=row["summary_seq"],
        event_count=row["event_count"],
        context_summary=row["context_summary"],
        context_summary_seq=row["context_summary_seq"],
        live=live,
    )


def session_values(record: SessionRecord, session_id: str) -> dict[str, object]:
    """A session record as column values (ids canonical, times left to the store)."""
    return {
        "id": session_id,
        "owner": record.owner,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "model": record.model,
        "title": record.title,
        "summary": record.summary,
        "summary_status": record.summary_status.value,
        "summary_seq": record.summary_seq,
        "event_count": record.event_count,
        "context_summary": record.context_summary,
        "context_summary_seq": record.context_summary_seq,
    }


@dataclass(frozen=True, slots=True)
class SessionCursor:
    """Position in the newest-first session list (the row before which the next page starts)."""

    created_at: datetime
    id: str


class LeaseState(StrEnum):
    """What the instance holding a session's lease is doing with it."""

    LIVE = "live"  # a client is connected there
    CLOSING = "closing"  # the client left; its last response is finishing


@dataclass(frozen=True, slots=True)
class Lease:
    """One holding of a session's lease. The epoch grows with every acquisition, so a holding
    that ended (taken over, released, session deleted) can never write again, even by the same
    instance."""

    session_id: str
    holder: str
    epoch: int


@dataclass(frozen=True, slots=True)
class EventRow:
    """A stored event with the lease of the writer that produced it."""

    lease: Lease
    event: StoredEvent

    @property
    def session_id(self) -> str:
        return self.lease.session_id


JobKind = Literal["summary", "title"]


@dataclass(frozen=True, slots=True)
class JobClaim:
    """A claimed summary or title job. Only the holder of the current claim's token may finish,
    fail or hand back the job; `attempts` counts the failures before this claim."""

    session_id: str
    kind: JobKind
    token: str
    attempts: int


class EventLog(Protocol):
    """Each session's events, `seq` 1..N without gaps."""

    async def append(self, rows: Sequence[EventRow]) -> None:
        """Store the rows in one transaction, or none of them.

        Every row's lease must be its session's current lease (`LeaseLost` otherwise). A row
        identical to the stored one at its `(session, seq)` is a retry and is skipped, whatever
        the lease (a replay after the lease was released); a different one is `EventConflict`.
        """
        ...

    async def read(
        self, session_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        """Events with `seq > after_seq`, oldest first; none for an unknown or malformed id."""
        ...


class SessionRepository(Protocol):
    """Session rows. Ids are UUIDs; a malformed id names no session (never an error)."""

    async def create(self, record: SessionRecord) -> None: ...

    async def get(self, session_id: str) -> SessionRecord | None: ...

    async def list(
        self, *, limit: int, before: SessionCursor | None, owner: str | None
    ) -> list[SessionRecord]:
        """Newest first; `owner=None` lists every session."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Delete a session with its events and lease; False when it did not exist."""
        ...

    async def save_context_summary(self, session_id: str, *, summary: str, upto_seq: int) -> None:
        """Store the rolling summary that replaces events `1..upto_seq` in model requests
        (never one that covers less than the stored one)."""
        ...


class LeaseRepository(Protocol):
    """Session leases; expiry is judged by the database's clock where the store has one."""

    async def acquire(
        self, session_id: str, *, holder: str, ttl_s: float
    ) -> Lease | LeaseState | None:
        """Take the lease when it is free, expired or `holder`'s already, with a new epoch; else
        the state of the other holder's lease; None when the session does not exist."""
        ...

    async def mark_closing(self, lease: Lease) -> None:
        """The client left; a resume elsewhere waits for the release instead of being refused."""
        ...

    async def mark_live(self, lease: Lease) -> None:
        """A client joined the holding's running response: a resume elsewhere is refused."""
        ...

    async def renew(self, leases: Sequence[Lease], *, ttl_s: float) -> set[str]:
        """Extend these holdings by `ttl_s`; the session ids whose holding still stands."""
        ...

    async def release(self, lease: Lease) -> None:
        """End the holding (nothing when it already ended)."""
        ...

    async def release_holder(self, holder: str) -> int:
        """End every holding of `holder` (an instance known to be dead); how many there were."""
        ...


class JobClaims(Protocol):
    """Summary and title jobs, shared by every instance on one store: each is claimed by one
    instance at a time with a token, and only that token's holder may write its outcome."""

    async def request_summary(self, session_id: str) -> None:
        """Mark the summary `pending` (the session changed since its last summary)."""
        ...

    async def summaries_due(self, *, stale_after_s: float) -> list[str]:
        """Sessions whose summary is pending, failed with a retry now due, or claimed longer ago
        than `stale_after_s` (its instance died)."""
        ...

    async def unsummarized_sessions(self) -> list[str]:
        """Sessions whose events go past their summary, not pending, running or failed, and with
        no unexpired lease: what a killed process left while clients were connected."""
        ...

    async def claim(
        self, session_id: str, kind: JobKind, *, claimant: str, stale_after_s: float
    ) -> JobClaim | None:
        """Claim a due job; None when another claim stands or nothing is due."""
        ...

    async def finish_summary(self, claim: JobClaim, *, summary: str, upto_seq: int) -> bool:
        """Store the summary (status `done`) if the claim still stands; `summary_seq` never
        moves backwards. False when the claim was lost."""
        ...

    async def finish_title(self, claim: JobClaim, title: str) -> bool:
        """Store the title if the claim still stands; False when it was lost."""
        ...

    async def fail(self, claim: JobClaim, *, retry_in_s: float | None) -> None:
        """The job failed: try again in `retry_in_s`, or never (status `failed`) when None."""
        ...

    async def hand_back(self, claim: JobClaim) -> None:
        """Give the job back unfinished (`pending`), so any instance makes it at once."""
        ...

    async def titles_due(self, *, stale_after_s: float) -> list[str]:
        """Sessions without a title whose title job is pending (and due) or claimed longer ago
        than `stale_after_s`."""
        ...

    async def reclaim(self, claimant: str) -> int:
        """Hand back every job `claimant` (an instance known to be dead) holds; how many."""
        ...


class ProfileRepository(Protocol):
    """The demo user profiles the `fetch_user_profile` tool answers from."""

    async def upsert(self, profiles: dict[str, dict[str, JsonValue]]) -> None: ...

    async def get(self, user_id: str) -> dict[str, JsonValue] | None: ...


UsageKind = Literal["tokens", "sessions"]
# The owner of every session when auth is off (owners are `key:...` or `user:...` otherwise).
SHARED_OWNER = ""


class UsageRepository(Protocol):
    """What each owner used, counted in the store so that limits hold across instances and
    restarts. Windows are named by their start (a UTC day for tokens, a UTC hour for sessions);
    the tokens of an answer are counted by the store itself as its `assistant.message` is
    appended (its `usage`), once."""

    async def amount(self, owner: str, kind: UsageKind, *, window_start: datetime) -> int:
        """How much of `kind` the owner used in the window (0 when nothing)."""
        ...

    async def take(
        self, owner: str, kind: UsageKind, *, window_start: datetime, limit: int
    ) -> bool:
        """Count one more of `kind` in the window unless it already holds `limit`: atomic, so
        instances racing for the last one cannot both have it. True when taken."""
        ...

    async def live_sessions(self, owner: str, *, limit: int) -> list[str]:
        """The owner's sessions with a live, unexpired lease (any instance), at most `limit`."""
        ...

    async def forget_before(self, before: datetime) -> int:
        """Delete the windows that started before `before`; how many."""
        ...


RetentionKind = Literal["empty", "idle"]


class RetentionRepository(Protocol):
    """Old sessions swept away in small batches, by one instance at a time."""

    async def claim(self, name: str, *, holder: str, ttl_s: float) -> bool:
        """Take or keep the housekeeping claim `name` for `ttl_s`; True when `holder` has it."""
        ...

    async def delete_sessions(self, kind: RetentionKind, *, before: datetime, batch: int) -> int:
        """Delete at most `batch` sessions that no live or closing lease holds: `empty` ones (no
        event) created before `before`, or `idle` ones (no event since `before`), with their
        events, lease and summaries. How many were deleted."""
        ...


class Store(Protocol):
    """One backend: its seams, opened and closed together."""

    @property
    def kind(self) -> str:
        """Short name of the backend, shown in logs and `/readyz`."""
        ...

    @property
    def events(self) -> EventLog: ...

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def leases(self) -> LeaseRepository: ...

    @property
    def jobs(self) -> JobClaims: ...

    @property
    def profiles(self) -> ProfileRepository: ...

    @property
    def usage(self) -> UsageRepository: ...

    @property
    def retention(self) -> RetentionRepository: ...

    async def open(self) -> None:
        """Connect and create or migrate the schema."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise `StoreError` unless the store answers (and, for SQLite, accepts writes)."""
        ...


def page(items: Sequence[str], size: int) -> list[Sequence[str]]:
    """`items` in consecutive pages of at most `size` (long id lists in one statement or URL)."""
    return [items[start : start + size] for start in range(0, len(items), size)]
