"""The Supabase store: the same tables over REST (PostgREST), with the official `postgrest` client.

One client for the process, on our own `httpx.AsyncClient` (timeouts, HTTP/1.1). REST has no
multi-statement transactions: what needs one is a function of the schema (`append_session_events`)
or a compare-and-swap (leases), and the `session_events` trigger keeps `event_count` and
`updated_at` (see docs/stores.md).
"""

from __future__ import annotations

from app.database.supabase.events import RestEventLog
from app.database.supabase.jobs import RestJobs
from app.database.supabase.leases import RestLeases
from app.database.supabase.profiles import RestProfiles
from app.database.supabase.rest import INSERT_ROWS, PAGE_ROWS, RestClient
from app.database.supabase.sessions import RestSessions
from app.database.supabase.usage import RestRetention, RestUsage

__all__ = ["INSERT_ROWS", "PAGE_ROWS", "SupabaseStore"]


class SupabaseStore:
    """`Store` on a Supabase project's REST API, with the service role (secret) key."""

    kind = "supabase"

    def __init__(self, url: str, key: str, *, timeout_s: float = 10.0) -> None:
        self._rest = RestClient(url, key, timeout_s=timeout_s)
        self.events = RestEventLog(self._rest)
        self.sessions = RestSessions(self._rest)
        self.leases = RestLeases(self._rest)
        self.jobs = RestJobs(self._rest)
        self.profiles = RestProfiles(self._rest)
        self.usage = RestUsage(self._rest)
        self.retention = RestRetention(self._rest)

    async def open(self) -> None:
        await self._rest.open()

    async def close(self) -> None:
        await self._rest.close()

    async def ping(self) -> None:
        query = self._rest.table("schema_version").select("version").limit(1)
        await self._rest.run(query, "Supabase does not answer")
