"""The live sessions of this process: attach a connection, refuse a second one, tear down after."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

from app.database.base import SessionRecord
from app.protocol import CloseCode, ErrorCode, SessionReady
from app.services.conversation import (
    Conversation,
    ConversationDeps,
    ConversationState,
    FrameSink,
)
from app.services.leases import LeaseBusy, LeaseKeeper
from app.services.summaries import Summarizer

log = logging.getLogger(__name__)


class ConnectRefused(Exception):
    """A connection cannot be attached to a session; `code` says why."""

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


def parse_session_id(raw: str) -> str | None:
    """The canonical form of a session id, or None when it is not one."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def visible_to(record: SessionRecord, owner: str | None) -> bool:
    """Sessions belong to whoever made them; another owner's session does not exist for you."""
    return record.owner == owner


class SessionHub:
    """Maps session ids to their one live `Conversation`; across instances, the store's session
    leases (`LeaseKeeper`) keep it to one connection per session."""

    def __init__(
        self,
        deps: ConversationDeps,
        summarizer: Summarizer,
        leases: LeaseKeeper,
        *,
        resume_wait_s: float,
    ) -> None:
        self._deps = deps
        self._summarizer = summarizer
        self._leases = leases
        self._resume_wait_s = resume_wait_s
        self._live: dict[str, Conversation] = {}
        self._claimed: set[str] = set()
        self._draining = False

    @property
    def draining(self) -> bool:
        return self._draining

    def is_live(self, session_id: str) -> bool:
        conversation = self._live.get(session_id)
        return conversation is not None and conversation.state is ConversationState.OPEN

    def is_known(self, session_id: str) -> bool:
        """True while a connection or its last response still holds the session here."""
        return session_id in self._live or session_id in self._claimed

    async def connect(
        self, session_id: str | None, *, after_seq: int, owner: str | None, sink: FrameSink
    ) -> tuple[Conversation, SessionReady]:
        """Attach a new connection: a fresh session, or a resumed one with its stored events."""
        if self._draining:
            raise ConnectRefused(
                ErrorCode.INTERNAL_ERROR, "the server is shutting down; reconnect", retryable=True
            )
        if session_id is None:
            return await self._start_new(owner, sink)
        return await self._resume(session_id, after_seq=after_seq, owner=owner, sink=sink)

    async def _start_new(
        self, owner: str | None, sink: FrameSink
    ) -> tuple[Conversation, SessionReady]:
        now = datetime.now(UTC)
        record = SessionRecord(
            id=str(uuid.uuid4()),
            created_at=now,
            updated_at=now,
            model=self._deps.provider.model,
            owner=owner,
        )
        await self._deps.store.create_session(record)
        await self._leases.acquire(record.id, wait_s=0)
        conversation = Conversation(record, [], self._deps, sink)
        self._live[record.id] = conversation
        ready = SessionReady(session_id=record.id, resumed=False, events=[], model=record.model)
        return conversation, ready

    async def _resume(
        self, raw_id: str, *, after_seq: int, owner: str | None, sink: FrameSink
    ) -> tuple[Conversation, SessionReady]:
        session_id = parse_session_id(raw_id)
        if session_id is None:
            raise ConnectRefused(ErrorCode.SESSION_NOT_FOUND, "no such session")
        await self._wait_for_previous(session_id)
        self._claimed.add(session_id)
        try:
            conversation = await self._load(session_id, owner, sink)
        finally:
            self._claimed.discard(session_id)
        self._live[session_id] = conversation
        events = [event for event in conversation.events if event.seq > after_seq]
        ready = SessionReady(
            session_id=session_id, resumed=True, events=events, model=self._deps.provider.model
        )
        return conversation, ready

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
                    await previous.closed.wait()
            except TimeoutError as e:
                raise ConnectRefused(
                    ErrorCode.SESSION_BUSY,
                    "the previous connection's response is still finishing; retry shortly",
                    retryable=True,
                ) from e

    async def _load(self, session_id: str, owner: str | None, sink: FrameSink) -> Conversation:
        record = await self._deps.store.get_session(session_id)
        if record is None or not visible_to(record, owner):
            raise ConnectRefused(ErrorCode.SESSION_NOT_FOUND, "no such session")
        await self._take_lease(session_id)
        try:
            # Read after the lease: the previous instance flushed everything before releasing.
            record = await self._deps.store.get_session(session_id) or record
            events = await self._deps.store.list_events(session_id, after_seq=0, limit=None)
        except BaseException:
            await self._leases.release(session_id)
            raise
        return Conversation(record, events, self._deps, sink)

    async def _take_lease(self, session_id: str) -> None:
        """Refuse while another instance's client is connected; wait (bounded) while that
        instance only finishes the last response."""
        try:
            await self._leases.acquire(session_id, wait_s=self._resume_wait_s)
        except LeaseBusy as e:
            message = (
                "the previous connection's response is still finishing; retry shortly"
                if e.retryable
                else "this session is open in another connection"
            )
            raise ConnectRefused(ErrorCode.SESSION_BUSY, message, retryable=e.retryable) from e

    def disconnect(self, conversation: Conversation) -> None:
        """The client left: the response runs to its end, then the session is torn down."""
        conversation.detach()
        self._deps.supervisor.spawn(
            self._tear_down(conversation), name=f"teardown-{conversation.session_id}"
        )

    async def _tear_down(self, conversation: Conversation) -> None:
        session_id = conversation.session_id
        try:
            await self._leases.mark_closing(session_id)
            await conversation.wait_response()
            await self._deps.writer.flush()
        finally:
            try:
                # Even when shutdown cancels the teardown, the summary is marked pending, so
                # an instance makes it. Marked before the release: a session without a lease
                # never looks like one a dead instance left unsummarized.
                if conversation.has_messages:
                    await self._summarizer.request(session_id)
            finally:
                # Released before a local resume may proceed, so it never loses the new lease.
                await self._leases.release(session_id)
                if self._live.get(session_id) is conversation:
                    del self._live[session_id]
                conversation.mark_closed()

    async def drain(self, *, grace_s: float) -> None:
        """Shutdown: refuse new connections, let responses finish within `grace_s`, cancel
        the rest (they are stored as cancelled), flush, and close every socket with 1001."""
        self._draining = True
        conversations = list(self._live.values())
        waits = [asyncio.ensure_future(c.wait_response()) for c in conversations]
        if waits:
            _, late = await asyncio.wait(waits, timeout=grace_s)
            for conversation in conversations:
                conversation.cancel_response()
            if late:
                await asyncio.wait(late)
        await self._deps.writer.flush()
        for conversation in conversations:
            await conversation.close_connection(CloseCode.GOING_AWAY, "server shutting down")
