"""The live sessions of this process: attach a connection, refuse a second one, tear down after."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from app.database.base import (
    Lease,
    LeaseState,
    SessionRecord,
    StoreError,
)
from app.protocol import MAX_SEQ, ErrorCode, ResponseFrame, SessionReady, StoredEvent
from app.services.approvals import paused_round
from app.services.conversation import (
    Conversation,
    ConversationDeps,
    ConversationState,
    FrameSink,
)
from app.services.history import queued_backlog
from app.services.hub_endings import (
    SESSION_DELETED,
    STORE_REFUSED,
    Connection,
    SessionEndings,
)
from app.services.hub_refusals import (
    ConnectRefused,
    lease_refusal,
    parse_session_id,
    store_refusal,
    visible_to,
)
from app.services.joining import RemoteJoin
from app.services.leases import LeaseBusy, LeaseKeeper, SessionGone
from app.services.remote_joins import JoinBusy, RemoteJoins
from app.services.response_bus import BusUnavailable, ResponseBus
from app.services.response_feed import LiveResponses
from app.services.summaries import Summarizer
from app.services.usage import UsageGuard

log = logging.getLogger(__name__)

# Summary claims older than this are no instance's: the left-queue sweep looks at every due one.
_LEFT_QUEUE_CLAIM_AGE_S = 0.0

# What the transports use with the hub (`Connection` is defined with the endings).
__all__ = ["ConnectRefused", "Connection", "SessionHub", "parse_session_id", "visible_to"]


class SessionHub(SessionEndings):
    """Maps session ids to their one live `Conversation`; across instances, the store's session
    leases (`LeaseKeeper`) keep it to one connection per session."""

    def __init__(
        self,
        deps: ConversationDeps,
        summarizer: Summarizer,
        leases: LeaseKeeper,
        *,
        resume_wait_s: float,
        bus: ResponseBus | None = None,
    ) -> None:
        self._deps = deps
        self._remote = None if bus is None else RemoteJoins(self, bus, leases, deps)
        self._summarizer = summarizer
        self._leases = leases
        self._resume_wait_s = resume_wait_s
        self._live: dict[str, Conversation] = {}
        self._claimed: set[str] = set()
        self._draining = False
        deps.writer.set_on_refused(self._on_refused)
        leases.set_on_lost(self._on_lost)

    @property
    def live_responses(self) -> LiveResponses:
        """The responses running here, for joining them (the service-level join API)."""
        return self._deps.live

    @property
    def usage(self) -> UsageGuard:
        return self._deps.usage

    @property
    def draining(self) -> bool:
        return self._draining

    def is_live(self, session_id: str) -> bool:
        conversation = self._live.get(session_id)
        if conversation is not None and conversation.state is ConversationState.OPEN:
            return True
        return self._remote is not None and self._remote.of_session(session_id) is not None

    async def connect(
        self,
        session_id: str | None,
        *,
        after_seq: int,
        owner: str | None,
        sink: FrameSink,
        credentials: str | None = None,
    ) -> tuple[Connection, SessionReady]:
        """Attach a new connection: a fresh session, or a resumed one with its stored events.
        `credentials` (the caller's verified token) stay in memory, for MCP servers that ask."""
        if self._draining:
            raise ConnectRefused(
                ErrorCode.INTERNAL_ERROR, "the server is shutting down; reconnect", retryable=True
            )
        connection: Connection
        try:
            if session_id is None:
                connection, ready = await self._start_new(owner, sink)
            else:
                connection, ready = await self._resume(
                    session_id, after_seq=after_seq, owner=owner, sink=sink
                )
        except StoreError as e:
            raise store_refusal(e) from e
        # A joined conversation takes the new client's token; a remote join hands it on later.
        connection.credentials = credentials
        return connection, ready

    async def connect_chat(
        self, session_id: str, *, owner: str | None, sink: FrameSink, credentials: str | None
    ) -> tuple[Connection, SessionReady]:
        """Attach to a session chosen by its client (an AI SDK chat): resumed when stored,
        else new with that id (stored with its first message, as any new session)."""
        if self._draining:
            raise ConnectRefused(
                ErrorCode.INTERNAL_ERROR, "the server is shutting down; retry", retryable=True
            )
        try:
            record = await self._deps.store.sessions.get(session_id)
        except StoreError as e:
            raise store_refusal(e) from e
        if record is not None or session_id in self._live:
            return await self.connect(
                session_id, after_seq=MAX_SEQ, owner=owner, sink=sink, credentials=credentials
            )
        conversation, ready = await self._start_new(owner, sink, session_id=session_id)
        conversation.credentials = credentials
        return conversation, ready

    def frames_before_join(self, connection: Connection) -> list[ResponseFrame]:
        """The joined response's frames from its start up to the join; call with no await
        after `connect`, so that they and the frames the sink gets next are the whole."""
        if isinstance(connection, RemoteJoin):
            return connection.frames_before_join
        feed = self._deps.live.of_session(connection.session_id)
        return [] if feed is None else feed.frames()

    async def response_running(self, session_id: str) -> bool:
        """A response of the session runs, here or (as far as the bus knows) elsewhere."""
        if self._deps.live.of_session(session_id) is not None:
            return True
        if self._remote is None:
            return False
        try:
            return await self._remote.running(session_id)
        except BusUnavailable:
            return False  # a resume then finds the stored result

    def live_events(self, session_id: str) -> list[StoredEvent] | None:
        """The events of a session live here, newer than the store while writes are queued."""
        conversation = self._live.get(session_id)
        return None if conversation is None else list(conversation.events)

    def waiting_here(self, session_id: str) -> tuple[list[str], int] | None:
        """The pending approvals and queue length of a session live here, or None."""
        conversation = self._live.get(session_id)
        if conversation is None:
            return None
        return conversation.pending_approvals, conversation.queue_length

    def live_record(self, session_id: str) -> SessionRecord | None:
        """The record of a session live here (stored or not yet: before its first message)."""
        conversation = self._live.get(session_id)
        return None if conversation is None else conversation.session_record

    async def cancel_running(self, session_id: str) -> bool:
        """Cancel the session's running response, here or on the instance that runs it."""
        conversation = self._live.get(session_id)
        if conversation is not None and (conversation.responding or conversation.storing):
            conversation.cancel_response()
            return True
        if self._remote is None:
            return False
        try:
            return await self._remote.cancel_running(session_id)
        except BusUnavailable as e:
            raise StoreError(f"the message bus does not answer: {e}", retryable=True) from e

    async def _start_new(
        self, owner: str | None, sink: FrameSink, *, session_id: str | None = None
    ) -> tuple[Conversation, SessionReady]:
        """A new session, stored only with its first message (`open_session`): a connection
        that never speaks leaves no row."""
        now = datetime.now(UTC)
        record = SessionRecord(
            id=session_id or str(uuid.uuid4()),
            created_at=now,
            updated_at=now,
            model=self._deps.provider.model,
            owner=owner,
        )
        conversation = Conversation(record, [], self._deps, sink, lease=None, opener=self)
        self._live[record.id] = conversation
        ready = SessionReady(session_id=record.id, resumed=False, events=[], model=record.model)
        return conversation, ready

    async def open_session(self, record: SessionRecord) -> Lease:
        """Store a new session at its first message: its row, then its lease (both committed
        before the message is written, so before it is acknowledged)."""
        now = datetime.now(UTC)
        try:
            await self._deps.store.sessions.create(replace(record, created_at=now, updated_at=now))
        except StoreError:
            # A create that timed out may have happened: a retry finds the row and goes on.
            if await self._deps.store.sessions.get(record.id) is None:
                raise
        try:
            return await self._take_lease(record.id, wait_s=0)
        except ConnectRefused as e:
            raise StoreError(f"cannot hold the new session: {e.message}", retryable=True) from e

    async def _resume(
        self, raw_id: str, *, after_seq: int, owner: str | None, sink: FrameSink
    ) -> tuple[Connection, SessionReady]:
        session_id = parse_session_id(raw_id)
        # Ownership before anything else: another owner's session does not exist, busy or not.
        record = await self._deps.store.sessions.get(session_id) if session_id else None
        if session_id is None or record is None or not visible_to(record, owner):
            self._refuse_unspoken(session_id, owner)
            raise ConnectRefused(ErrorCode.SESSION_NOT_FOUND, "no such session")
        joined = await self._join_here(session_id, after_seq=after_seq, sink=sink)
        if joined is not None:
            return joined
        await self._wait_for_previous(session_id)
        self._claimed.add(session_id)
        try:
            taken = await self._lease_or_remote_join(session_id, after_seq=after_seq, sink=sink)
            if isinstance(taken, tuple):
                return taken  # the join holds the claim until it ends
            conversation = await self._load(session_id, sink, taken)
        except BaseException:
            self._claimed.discard(session_id)
            raise
        self._claimed.discard(session_id)
        self._live[session_id] = conversation
        events = [event for event in conversation.events if event.seq > after_seq]
        ready = SessionReady(
            session_id=session_id,
            resumed=True,
            events=events,
            model=self._deps.provider.model,
            pending_approvals=conversation.pending_approvals,
        )
        return conversation, ready

    async def _join_here(
        self, session_id: str, *, after_seq: int, sink: FrameSink
    ) -> tuple[Conversation, SessionReady] | None:
        """Join the session's response running on this instance, if one runs."""
        previous = self._live.get(session_id)
        if previous is None or not previous.joinable:
            return None
        if self._remote is not None and await self._remote.claimed_elsewhere(session_id):
            raise ConnectRefused(
                ErrorCode.SESSION_BUSY, "this session is open in another connection"
            )
        if not previous.joinable:  # it ended meanwhile
            return None
        # No await from here to the caller's send of `session.ready`: see `join`.
        ready = previous.join(sink, after_seq=after_seq, model=self._deps.provider.model)
        self._deps.metrics.joins.labels(where="local").inc()
        return previous, ready

    async def _lease_or_remote_join(
        self, session_id: str, *, after_seq: int, sink: FrameSink
    ) -> Lease | tuple[RemoteJoin, SessionReady]:
        """The session's lease; or, while another instance finishes a response the bus carries,
        a join of that response; without a bus, or when it fails, wait for the lease."""
        if self._remote is None:
            return await self._take_lease(session_id, wait_s=self._resume_wait_s)
        taken = await self._take_lease_or_closing(session_id)
        if isinstance(taken, Lease):
            return taken
        try:
            joined = await self._remote.join(session_id, after_seq=after_seq, sink=sink)
        except JoinBusy as e:
            raise ConnectRefused(
                ErrorCode.SESSION_BUSY, "this session is open in another connection"
            ) from e
        if joined is not None:
            self._deps.metrics.joins.labels(where="remote").inc()
            return joined
        return await self._take_lease(session_id, wait_s=self._resume_wait_s)

    # -- JoinHost: a remote join's connection becomes this instance's conversation ------------

    async def adopt(self, join: RemoteJoin, lease: Lease) -> Conversation | None:
        sink = join.sink
        if sink is None:
            return None
        try:
            record = await self._deps.store.sessions.get(join.session_id)
            events = await self._deps.store.events.read(join.session_id)
        except StoreError as e:
            log.warning("a joined connection cannot load its session: %s", e)
            await join.end(STORE_REFUSED)
            return None
        if record is None:
            await join.end(SESSION_DELETED)
            return None
        conversation = Conversation(record, events, self._deps, sink, lease=lease)
        conversation.credentials = join.credentials
        self._live[join.session_id] = conversation
        self._claimed.discard(join.session_id)
        return conversation

    def join_ended(self, join: RemoteJoin) -> None:
        if join.conversation is None:
            self._claimed.discard(join.session_id)
        if self._remote is not None:
            self._remote.ended(join)

    def opened(self, connection: Connection) -> None:
        """`session.ready` was sent: a remote join starts relaying; a loaded conversation goes
        on with what its log left waiting (approvals, queued messages)."""
        if isinstance(connection, RemoteJoin):
            connection.start(self._spawn)
        else:
            connection.resume_backlog()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._deps.supervisor.spawn(coroutine, name=name)

    def _refuse_unspoken(self, session_id: str | None, owner: str | None) -> None:
        """A session not stored yet (its client has not spoken) exists only in its connection:
        open here, a second connection is told it is busy; gone, it never existed."""
        conversation = self._live.get(session_id) if session_id else None
        if (
            conversation is not None
            and conversation.state is ConversationState.OPEN
            and visible_to(conversation.session_record, owner)
        ):
            raise ConnectRefused(
                ErrorCode.SESSION_BUSY, "this session is open in another connection"
            )

    async def _wait_for_previous(self, session_id: str) -> None:
        """Refuse a second live connection; wait (bounded) for one that is only tearing down."""
        while True:
            previous = self._live.get(session_id)
            if session_id in self._claimed or (
                previous is not None and previous.state is ConversationState.OPEN
            ):
                raise ConnectRefused(
                    ErrorCode.SESSION_BUSY, "this session is open in another connection"
                )
            if previous is None:
                return
            try:
                async with asyncio.timeout(self._resume_wait_s):
                    await previous.wait_closed()
            except TimeoutError as e:
                raise ConnectRefused(
                    ErrorCode.SESSION_BUSY,
                    "the previous connection's response is still finishing; retry shortly",
                    retryable=True,
                ) from e

    # -- queues a stopped process left ---------------------------------------------------------

    async def answer_left_queues(self) -> None:
        """At start: queued messages a stopped process left unanswered are answered now, with
        no client. Their sessions are among those whose summary is due (a teardown, even at
        shutdown, asks for one; a killed process leaves them unsummarized)."""
        jobs = self._deps.store.jobs
        try:
            due = await jobs.summaries_due(stale_after_s=_LEFT_QUEUE_CLAIM_AGE_S)
            candidates = dict.fromkeys([*due, *await jobs.unsummarized_sessions()])
        except StoreError as e:
            log.warning("could not look for queued messages left unanswered: %s", e)
            return
        for session_id in candidates:
            try:
                await self._answer_left_queue(session_id)
            except (StoreError, ConnectRefused) as e:
                log.warning("could not answer the queue of %s: %s", session_id, e)

    async def _answer_left_queue(self, session_id: str) -> None:
        events = await self._deps.store.events.read(session_id)
        if not queued_backlog(events) or paused_round(events) is not None:
            return
        if session_id in self._live or session_id in self._claimed or self._draining:
            return  # a client has it: its conversation answers the queue
        lease = await self._take_lease(session_id, wait_s=0)
        self._claimed.add(session_id)
        try:
            conversation = await self._load(session_id, None, lease)
        finally:
            self._claimed.discard(session_id)
        self._live[session_id] = conversation
        log.info("answering %d queued message(s) of %s", conversation.queue_length, session_id)
        conversation.resume_backlog()
        self._deps.supervisor.spawn(
            self._tear_down(conversation, conversation.attachment),
            name=f"teardown-{session_id}",
        )

    async def _load(self, session_id: str, sink: FrameSink | None, lease: Lease) -> Conversation:
        try:
            # Read after the lease: the previous holder flushed everything before releasing.
            record = await self._deps.store.sessions.get(session_id)
            events = await self._deps.store.events.read(session_id)
        except BaseException:
            await self._leases.release(lease)
            raise
        if record is None:
            await self._leases.release(lease)
            raise ConnectRefused(ErrorCode.SESSION_NOT_FOUND, "no such session")
        return Conversation(record, events, self._deps, sink, lease=lease)

    async def _take_lease(self, session_id: str, *, wait_s: float) -> Lease:
        """Refuse while another instance's client is connected; wait (bounded) while that
        instance only finishes the last response."""
        try:
            return await self._leases.acquire(session_id, wait_s=wait_s)
        except (SessionGone, LeaseBusy) as e:
            raise lease_refusal(e) from e

    async def _take_lease_or_closing(self, session_id: str) -> Lease | LeaseState:
        """As `_take_lease`, but `CLOSING` instead of waiting for the other instance."""
        try:
            return await self._leases.acquire_or_closing(session_id)
        except (SessionGone, LeaseBusy) as e:
            raise lease_refusal(e) from e
