"""Session leases: one live connection per session across every instance on one database.

The instance serving a session holds its lease in the store, with an epoch that grows with
every acquisition; every event it writes names that holding, and the store refuses events of a
holding that ended. A heartbeat renews every lease this instance holds; a lease found gone (it
expired while this instance could not reach the store and another took it, or the session was
deleted) is reported through `on_lost`, so its conversation ends instead of writing on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.database.base import Lease, LeaseRepository, LeaseState, StoreError
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


class SessionGone(Exception):
    """The session does not exist (any more)."""


class LeaseKeeper:
    """This instance's leases: taken at connect, renewed by `run()`, released at teardown."""

    def __init__(
        self, leases: LeaseRepository, metrics: Metrics, *, instance_id: str, ttl_s: float
    ) -> None:
        self.instance_id = instance_id
        self._leases = leases
        self._metrics = metrics
        self._ttl_s = ttl_s
        self._held: dict[str, Lease] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._on_lost: Callable[[Lease], None] = lambda lease: None

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def set_on_lost(self, on_lost: Callable[[Lease], None]) -> None:
        """Who hears about holdings found lost (the hub, which ends their conversations)."""
        self._on_lost = on_lost

    async def acquire(self, session_id: str, *, wait_s: float) -> Lease:
        """Take the lease; refuse while another instance's client is connected (after a short
        grace for a drop it has not seen yet), wait (at most `wait_s`) while that instance only
        finishes the last response. `SessionGone` when there is no such session."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        live_deadline = loop.time() + min(_LIVE_GRACE_S, wait_s)
        while True:
            taken = await self.try_take(session_id)
            if isinstance(taken, Lease):
                return taken
            if taken is None:
                raise SessionGone(session_id)
            if taken is LeaseState.LIVE and loop.time() >= live_deadline:
                self._metrics.lease_refusals.labels(state=taken.value).inc()
                raise LeaseBusy(retryable=False)
            if loop.time() >= deadline:
                self._metrics.lease_refusals.labels(state=taken.value).inc()
                raise LeaseBusy(retryable=True)
            # Polling a condition with a deadline: the other instance has no channel to us.
            await asyncio.sleep(min(_CLOSING_POLL_S, max(deadline - loop.time(), 0)))

    async def acquire_or_closing(self, session_id: str) -> Lease | LeaseState:
        """The lease, or `CLOSING` while another instance finishes its last response (a resume
        may join that response); refuse while another instance's client is connected (after
        the same short grace as `acquire`)."""
        loop = asyncio.get_running_loop()
        live_deadline = loop.time() + _LIVE_GRACE_S
        while True:
            taken = await self.try_take(session_id)
            if isinstance(taken, Lease) or taken is LeaseState.CLOSING:
                return taken
            if taken is None:
                raise SessionGone(session_id)
            if loop.time() >= live_deadline:
                self._metrics.lease_refusals.labels(state=taken.value).inc()
                raise LeaseBusy(retryable=False)
            await asyncio.sleep(_CLOSING_POLL_S)

    async def try_take(self, session_id: str) -> Lease | LeaseState | None:
        """One attempt: the lease, or the state of the other instance's holding, or None when
        there is no such session. Raises `StoreError`."""
        taken = await self._leases.acquire(session_id, holder=self.instance_id, ttl_s=self._ttl_s)
        if isinstance(taken, Lease):
            self._held[session_id] = taken
            self._metrics.session_leases.set(len(self._held))
        return taken

    async def mark_closing(self, lease: Lease) -> None:
        """The client left; best effort (a resume elsewhere is refused instead of waiting)."""
        try:
            await self._leases.mark_closing(lease)
        except StoreError as e:
            log.warning("could not mark the lease of %s closing: %s", lease.session_id, e)

    async def mark_live(self, lease: Lease) -> None:
        """A client joined the running response again; best effort, like `mark_closing`."""
        try:
            await self._leases.mark_live(lease)
        except StoreError as e:
            log.warning("could not mark the lease of %s live: %s", lease.session_id, e)

    async def release(self, lease: Lease) -> None:
        """End the holding; if the store is down it expires by itself within the TTL."""
        if self._held.get(lease.session_id) == lease:
            del self._held[lease.session_id]
        self._metrics.session_leases.set(len(self._held))
        if self._stopping.is_set():
            self._wake.set()
        try:
            await self._leases.release(lease)
        except StoreError as e:
            log.warning("could not release the lease of %s: %s", lease.session_id, e)

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
        """Extend every held lease once; a holding found ended is reported to `on_lost`."""
        held = dict(self._held)
        if not held:
            return
        try:
            renewed = await self._leases.renew(list(held.values()), ttl_s=self._ttl_s)
        except StoreError as e:
            self._metrics.lease_renew_failures.inc()
            log.warning("could not renew %d session leases: %s", len(held), e)
            return
        lost = [
            lease
            for session_id, lease in held.items()
            if session_id not in renewed and self._held.get(session_id) == lease
        ]
        if lost:
            self._metrics.lease_renew_failures.inc()
            log.error("lost the leases of %d sessions: %s", len(lost), [x.session_id for x in lost])
        for lease in lost:
            del self._held[lease.session_id]
            self._on_lost(lease)
