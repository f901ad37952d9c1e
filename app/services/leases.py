"""Session leases: one live connection per session across every instance on one database.

The instance serving a session holds its lease row in the store. A heartbeat renews every lease
this instance holds; teardown releases it. A lease whose instance died is not renewed and expires
within `ttl_s`, after which any instance may take the session.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from app.database.base import LeaseState, Store, StoreError
from app.services.metrics import Metrics

log = logging.getLogger(__name__)

# How often a resume waiting for another instance's closing lease asks again.
_CLOSING_POLL_S = 0.1
# A client that drops and reconnects at once may reach another instance before the first one
# has seen the drop and marked the lease closing: a live lease is asked again for this long.
_LIVE_GRACE_S = 1.0


class LeaseBusy(Exception):
    """Another instance holds the session: live (`retryable` False) or still closing."""

    def __init__(self, *, retryable: bool) -> None:
        super().__init__("the session is held by another instance")
        self.retryable = retryable


class LeaseKeeper:
    """This instance's leases: taken at connect, renewed by `run()`, released at teardown."""

    def __init__(self, store: Store, metrics: Metrics, *, ttl_s: float) -> None:
        self.instance_id = str(uuid.uuid4())
        self._store = store
        self._metrics = metrics
        self._ttl_s = ttl_s
        self._held: set[str] = set()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    async def acquire(self, session_id: str, *, wait_s: float) -> None:
        """Take the lease; refuse while another instance's client is connected (after a short
        grace for a drop it has not seen yet), wait (at most `wait_s`) while that instance only
        finishes the last response."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        live_deadline = loop.time() + min(_LIVE_GRACE_S, wait_s)
        while True:
            state = await self._store.acquire_lease(
                session_id, holder=self.instance_id, ttl_s=self._ttl_s
            )
            if state is None:
                self._held.add(session_id)
                self._metrics.session_leases.set(len(self._held))
                return
            if state is LeaseState.LIVE and loop.time() >= live_deadline:
                self._metrics.lease_refusals.labels(state=state.value).inc()
                raise LeaseBusy(retryable=False)
            if loop.time() >= deadline:
                self._metrics.lease_refusals.labels(state=state.value).inc()
                raise LeaseBusy(retryable=True)
            # Polling a condition with a deadline: the other instance has no channel to us.
            await asyncio.sleep(min(_CLOSING_POLL_S, max(deadline - loop.time(), 0)))

    async def mark_closing(self, session_id: str) -> None:
        """The client left; best effort (a resume elsewhere is refused instead of waiting)."""
        try:
            await self._store.mark_lease_closing(session_id, holder=self.instance_id)
        except StoreError as e:
            log.warning("could not mark the lease of %s closing: %s", session_id, e)

    async def release(self, session_id: str) -> None:
        """Drop the lease; if the store is down it expires by itself within the TTL."""
        self._held.discard(session_id)
        self._metrics.session_leases.set(len(self._held))
        if self._stopping.is_set():
            self._wake.set()
        try:
            await self._store.release_lease(session_id, holder=self.instance_id)
        except StoreError as e:
            log.warning("could not release the lease of %s: %s", session_id, e)

    def stop(self) -> None:
        """Shutdown: the heartbeat ends once every lease is released."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """The heartbeat: renew every held lease each third of the TTL, until stopped and empty."""
        loop = asyncio.get_running_loop()
        next_renewal = loop.time() + self._ttl_s / 3
        while not (self._stopping.is_set() and not self._held):
            self._wake.clear()
            try:
                async with asyncio.timeout_at(next_renewal):
                    await self._wake.wait()  # stop() or a release while stopping: check again
            except TimeoutError:
                await self.renew()
                next_renewal = loop.time() + self._ttl_s / 3

    async def renew(self) -> None:
        """Extend every held lease once; a lease found gone is reported (it expired while this
        instance could not reach the store, and another instance may have the session now)."""
        held = set(self._held)
        if not held:
            return
        try:
            renewed = await self._store.renew_leases(
                sorted(held), holder=self.instance_id, ttl_s=self._ttl_s
            )
        except StoreError as e:
            self._metrics.lease_renew_failures.inc()
            log.warning("could not renew %d session leases: %s", len(held), e)
            return
        lost = held - renewed - (held - self._held)
        if lost:
            self._metrics.lease_renew_failures.inc()
            log.error("lost the leases of %d sessions: %s", len(lost), sorted(lost))
