"""The hub's side of joining a response that runs on another instance: find it on the bus,
claim the join, build `session.ready` from the store and the stream so far, hand the connection
to a `RemoteJoin`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from app.protocol import (
    LiveResponse,
    ResponseDelta,
    ResponseDone,
    ResponseFrame,
    SessionReady,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
)
from app.services.conversation import ConversationDeps, FrameSink
from app.services.joining import CLAIM_TTL_S, JoinHost, RemoteJoin
from app.services.leases import LeaseKeeper
from app.services.response_bus import BusUnavailable, ResponseBus, gapless

log = logging.getLogger(__name__)


def ready_of_join(
    session_id: str,
    stored: Sequence[StoredEvent],
    frames: Sequence[ResponseFrame],
    *,
    response_id: str,
    after_seq: int,
    model: str,
) -> SessionReady:
    """`session.ready` for a client joining a response from its frames so far: the stored
    events, then the response's tool events not stored yet, and its text so far."""
    events = [event for event in stored if event.seq > after_seq]
    stored_upto = max((event.seq for event in stored), default=0)
    newer_than = max(stored_upto, after_seq)
    for frame in frames:
        if isinstance(frame, ToolCallEvent | ToolResultEvent) and frame.seq > newer_than:
            events.append(frame)
    text = "".join(frame.text for frame in frames if isinstance(frame, ResponseDelta))
    return SessionReady(
        session_id=session_id,
        resumed=True,
        events=events,
        model=model,
        live_response=LiveResponse(response_id=response_id, text=text),
    )


class RemoteJoins:
    """The hub's side of joining responses that run on other instances."""

    def __init__(
        self, host: JoinHost, bus: ResponseBus, leases: LeaseKeeper, deps: ConversationDeps
    ) -> None:
        self._host = host
        self._bus = bus
        self._leases = leases
        self._deps = deps
        self._active: dict[str, RemoteJoin] = {}

    async def claimed_elsewhere(self, session_id: str) -> bool:
        """A client on another instance has joined the session's response."""
        try:
            return await self._bus.claimed(session_id)
        except BusUnavailable:
            return False

    async def join(
        self, session_id: str, *, after_seq: int, sink: FrameSink
    ) -> tuple[RemoteJoin, SessionReady] | None:
        """Join the session's response running on another instance through the bus; None when
        the bus knows none, fails, or misses some of its frames (then the caller waits for the
        stored result). `ConnectRefused`-worthy busy is raised as `JoinBusy`."""
        stored = await self._deps.store.events.read(session_id)
        token = RemoteJoin.new_claim_token()
        try:
            response_id = await self._bus.running_response(session_id)
            if response_id is None:
                return None
            if not await self._bus.claim(session_id, token, ttl_s=CLAIM_TTL_S):
                raise JoinBusy(session_id)
            entries = await self._bus.read(response_id, after="0", block_ms=0)
        except BusUnavailable as e:
            log.warning("the message bus does not answer; the resume waits instead: %s", e)
            self._deps.metrics.joins.labels(where="fallback").inc()
            return None
        if not entries or not gapless(entries, 0) or isinstance(entries[-1].frame, ResponseDone):
            # Trimmed, published with gaps, or already over: the stored result is complete.
            self._deps.metrics.joins.labels(where="fallback").inc()
            await self._release(session_id, token)
            return None
        ready = ready_of_join(
            session_id,
            stored,
            [entry.frame for entry in entries],
            response_id=response_id,
            after_seq=after_seq,
            model=self._deps.provider.model,
        )
        join = RemoteJoin(
            self._host,
            session_id=session_id,
            response_id=response_id,
            frames=entries,
            bus=self._bus,
            leases=self._leases,
            sink=sink,
            claim_token=token,
            sent_upto_seq=max((event.seq for event in stored), default=0),
        )
        self._active[session_id] = join
        return join, ready

    async def running(self, session_id: str) -> bool:
        """The bus knows a running response of the session. Raises `BusUnavailable`."""
        return await self._bus.running_response(session_id) is not None

    async def cancel_running(self, session_id: str) -> bool:
        """Ask the instance running the session's response to cancel it; False when the bus
        knows no running response. Raises `BusUnavailable`."""
        response_id = await self._bus.running_response(session_id)
        if response_id is None:
            return False
        await self._bus.cancel(response_id)
        return True

    def of_session(self, session_id: str) -> RemoteJoin | None:
        """The connection here joined to the session's response elsewhere, if there is one."""
        return self._active.get(session_id)

    def active(self) -> list[RemoteJoin]:
        """The connections joined to responses of other instances."""
        return list(self._active.values())

    def ended(self, join: RemoteJoin) -> None:
        """The join became a conversation or ended: its claim goes."""
        if self._active.get(join.session_id) is join:
            del self._active[join.session_id]
        self._deps.supervisor.spawn(
            self._release(join.session_id, join.claim_token), name=f"unclaim-{join.session_id}"
        )

    async def _release(self, session_id: str, token: str) -> None:
        with contextlib.suppress(BusUnavailable):  # it expires by itself (CLAIM_TTL_S)
            await self._bus.release_claim(session_id, token)


class JoinBusy(Exception):
    """A client on another instance has joined the session's running response."""
