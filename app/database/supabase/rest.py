"""The REST connection to a Supabase project: one `postgrest` client on our own httpx client,
and the translation of every REST failure into a `StoreError`.

`postgrest` and `httpx` types and errors stay in this package.
"""

from __future__ import annotations

import contextvars
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
from postgrest import APIError, AsyncPostgrestClient

from app.database.base import EventConflict, LeaseLost, StoreError
from app.database.migrations import latest_version, pending

Row = dict[str, Any]
# PostgREST answers at most 1000 rows per request by default; one insert is one transaction,
# and a few hundred rows keep a request well inside the gateway's body and time limits.
PAGE_ROWS = 1000
INSERT_ROWS = 500
# Ids in one `in.(...)` filter: a URL stays far below the gateway's limit (uuids are 36 chars).
IDS_PER_REQUEST = 100

# PostgREST's own codes for "cannot reach the database" (connection, pool timeout, ...).
_RETRYABLE_PGRST = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})
_RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})
# HTTP statuses worth trying again when the body says nothing more (a gateway's own error).
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
_KEY_REFUSED = frozenset({"401", "PGRST301", "PGRST302", "PGRST303"})
_NO_TABLE = frozenset({"42P01", "PGRST205", "404"})
_NOT_ALLOWED = frozenset({"42501", "403"})
# Raised by the schema's `append_session_events` (see the PostgreSQL migrations).
_LEASE_LOST = "RT412"
_CONFLICT = "RT409"
FOREIGN_KEY_VIOLATION = "23503"

# The HTTP status of the last answer this task received: `postgrest` drops it when the error
# body is JSON without a code (a gateway's `{"message": "Bad gateway"}`), and it decides.
_last_status: contextvars.ContextVar[int] = contextvars.ContextVar("last_status", default=0)


class RestError(StoreError):
    """A REST request failed; `code` is PostgREST's (or SQLSTATE, or the HTTP status)."""

    def __init__(self, message: str, *, retryable: bool, code: str) -> None:
        super().__init__(message, retryable=retryable)
        self.code = code


def rows_of(data: object) -> list[Row]:
    """PostgREST answers a JSON array of row objects (empty with `return=minimal`)."""
    if not isinstance(data, list):
        return []
    return [dict(row) for row in data if isinstance(row, dict)]


def as_uuid(session_id: str) -> str | None:
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        return None


def moment(plus_s: float = 0.0) -> str:
    """This instance's time `plus_s` from now, as a timestamp for a row or a filter."""
    return (datetime.now(UTC) + timedelta(seconds=plus_s)).isoformat()


def quoted(value: str) -> str:
    # Inside or=(...) a value with reserved characters (`,.:()`) must be double-quoted.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_retryable(code: str, status: int) -> bool:
    if code in _RETRYABLE_PGRST:
        return True
    if len(code) == 5:  # an SQLSTATE
        return code[:2] in _RETRYABLE_SQLSTATE_CLASSES
    if code.startswith("PGRST"):
        return False
    # No code of PostgREST or the database: the HTTP status says what happened.
    return status in _RETRYABLE_STATUS or (code.isdigit() and int(code) in _RETRYABLE_STATUS)


def translate(error: Exception, doing: str) -> StoreError:
    """A REST failure as our own error; timeouts and dropped connections are retryable, a value
    that cannot be sent is not."""
    if isinstance(error, UnicodeEncodeError):
        # A lone surrogate in the request: httpx cannot encode it, and no store could hold it.
        return StoreError(f"{doing}: {error}", retryable=False)
    if not isinstance(error, APIError):
        return StoreError(f"{doing}: {error!r}", retryable=True)
    status = _last_status.get()
    code = str(error.code or "") or (str(status) if status else "")
    message = f"{doing}: {error.message} ({code})"
    if code == _LEASE_LOST:
        return LeaseLost(message)
    if code == _CONFLICT:
        return EventConflict(message)
    return RestError(message, retryable=_is_retryable(code, status), code=code)


async def _remember_status(response: httpx.Response) -> None:
    _last_status.set(response.status_code)


class RestClient:
    """The project's REST API: opened once, closed at shutdown."""

    def __init__(self, url: str, key: str, *, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncPostgrestClient | None = None

    @property
    def client(self) -> AsyncPostgrestClient:
        if self._client is None:
            raise StoreError("the Supabase store is not open", retryable=False)
        return self._client

    def table(self, name: str) -> Any:
        return self.client.from_(name)

    async def open(self) -> None:
        # HTTP/2 off: long-lived HTTP/2 connections to the gateway end in frequent
        # "Server disconnected" errors; HTTP/1.1 keep-alive is as fast for small requests.
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout_s),
            http2=False,
            event_hooks={"response": [_remember_status]},
        )
        self._client = AsyncPostgrestClient(
            f"{self.url}/rest/v1",
            headers={"apikey": self._key, "Authorization": f"Bearer {self._key}"},
            http_client=self._http,
            # The client would sleep seconds between GET retries; our writer and callers decide.
            retry_enabled=False,
        )
        try:
            await self._check_schema()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._http = None
        self._client = None

    async def run(self, query: Any, doing: str) -> list[Row]:
        """Execute a built query; the rows it answered (none with `return=minimal`)."""
        _last_status.set(0)
        try:
            answer = await query.execute()
        except (APIError, httpx.HTTPError, UnicodeEncodeError) as e:
            raise translate(e, doing) from e
        return rows_of(answer.data)

    async def call(self, function: str, request: dict[str, object], doing: str) -> object:
        """Call a function of the schema that takes one JSON object (`request`); its result."""
        _last_status.set(0)
        # The client sends any JSON; its annotation says `str` values only.
        query = self.client.rpc(function, cast("dict[str, str]", {"request": request}))
        try:
            answer = await query.execute()
        except (APIError, httpx.HTTPError, UnicodeEncodeError) as e:
            raise translate(e, doing) from e
        result: object = answer.data
        return result

    async def _check_schema(self) -> None:
        """Stop the start, naming the setting, when the URL, the key or the schema is wrong."""
        query = self.table("schema_version").select("version").order("version", desc=True)
        try:
            answer = await query.limit(1).execute()
        except httpx.HTTPError as e:
            raise StoreError(f"cannot reach SUPABASE_URL {self.url}: {e!r}", retryable=False) from e
        except APIError as e:
            raise self._start_error(e) from e
        rows = rows_of(answer.data)
        current = int(rows[0]["version"]) if rows else 0
        if current < latest_version("postgres"):
            raise StoreError(
                f"the Supabase database schema is at version {current}, this app needs "
                f"{latest_version('postgres')}: run schema.sql, then supabase/policies.sql, in the "
                "project's SQL editor (both upgrade in place)",
                retryable=False,
            )
        pending("postgres", current)  # refuses a schema newer than this app

    def _start_error(self, error: APIError) -> StoreError:
        code = str(error.code or "") or str(_last_status.get())
        if code in _KEY_REFUSED or "api key" in str(error.message or "").lower():
            reason = "SUPABASE_KEY was refused (use the project's service role / secret key)"
        elif code in _NO_TABLE:
            reason = (
                f"SUPABASE_URL {self.url} has no `schema_version` table: run schema.sql, then "
                "supabase/policies.sql, in the project's SQL editor"
            )
        elif code in _NOT_ALLOWED:
            reason = "SUPABASE_KEY may not read the tables: use the service role / secret key"
        else:
            reason = f"SUPABASE_URL {self.url} answered an error"
        return StoreError(f"{reason}: {error.message} ({code})", retryable=False)
