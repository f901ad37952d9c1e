"""How the hub's conversations end: endings the client did not ask for (a deleted session, a
lost lease, a store that refuses), the teardown after a client leaves, and the drain at
shutdown. A part of `SessionHub`, which keeps the state declared below."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.database.base import Lease, LeaseLost, StoreError, WriteRefused
from app.protocol import CloseCode, ErrorCode
from app.services.conversation import (
    Conversation,
    ConversationDeps,
    ConversationState,
    Ending,
)
from app.services.joining import RemoteJoin
from app.services.leases import LeaseKeeper
from app.services.remote_joins import RemoteJoins
from app.services.summaries import Summarizer

log = logging.getLogger(__name__)

SESSION_MOVED = Ending(
    ErrorCode.SESSION_BUSY,
    "this session is now held by another connection; resume it to continue",
    CloseCode.TRY_AGAIN_LATER,
    retryable=True,
)
SESSION_DELETED = Ending(
    ErrorCode.SESSION_NOT_FOUND, "this session was deleted", CloseCode.NOT_FOUND
)
STORE_REFUSED = Ending(
    ErrorCode.STORE_UNAVAILABLE,
    "the store refused this session's events; resume it to continue from what is stored",
    CloseCode.TRY_AGAIN_LATER,
    retryable=True,
)


# A client's connection: a conversation here, or a join of a response running elsewhere.
Connection = Conversation | RemoteJoin


class SessionEndings:
    """The endings of the hub's conversations (see the module docstring)."""

    _deps: ConversationDeps
    _live: dict[str, Conversation]
    _remote: RemoteJoins | None
    _leases: LeaseKeeper
    _summarizer: Summarizer
    _draining: bool

    # -- endings the client did not ask for ------------------------------------------------

    def end_deleted(self, session_id: str) -> None:
        """The session is being deleted: its conversation here ends (the client hears why)."""
        conversation = self._live.get(session_id)
        if conversation is not None:
            conversation.end(SESSION_DELETED)
        join = None if self._remote is None else self._remote.of_session(session_id)
        if join is not None and join.conversation is None:
            self._deps.supervisor.spawn(join.end(SESSION_DELETED), name=f"end-{session_id}")

    def _on_refused(self, lease: Lease, error: WriteRefused) -> None:
        self._deps.metrics.store_refusals.inc()
        self._end_holding(lease, SESSION_MOVED if isinstance(error, LeaseLost) else STORE_REFUSED)

    def _on_lost(self, lease: Lease) -> None:
        self._end_holding(lease, SESSION_MOVED)

    def _end_holding(self, lease: Lease, ending: Ending) -> None:
        conversation = self._live.get(lease.session_id)
        if conversation is None or conversation.lease != lease:
            return
        self._deps.supervisor.spawn(
            self._end_checked(conversation, ending), name=f"ending-{lease.session_id}"
        )

    async def _end_checked(self, conversation: Conversation, ending: Ending) -> None:
        """A lost lease may mean the session was deleted elsewhere: then say so."""
        if ending is SESSION_MOVED:
            with contextlib.suppress(StoreError):
                if await self._deps.store.sessions.get(conversation.session_id) is None:
                    ending = SESSION_DELETED
        conversation.end(ending)

    # -- teardown ---------------------------------------------------------------------------

    def disconnect(self, connection: Connection) -> None:
        """The client left: the response runs to its end (a resume may join it meanwhile),
        then the session is torn down."""
        if isinstance(connection, RemoteJoin):
            adopted = connection.leave()
            if adopted is None:
                return  # its relay task ends and reports `join_ended`
            connection = adopted
        conversation = connection
        conversation.detach()
        self._deps.supervisor.spawn(
            self._tear_down(conversation, conversation.attachment),
            name=f"teardown-{conversation.session_id}",
            background=True,
        )

    async def _tear_down(self, conversation: Conversation, attachment: int) -> None:
        if conversation.lease is None:
            # Never stored, unless its first message is being stored right now.
            await conversation.wait_response()
        lease = conversation.lease
        if lease is None:
            self._forget(conversation)
            return
        flushed = False
        try:
            await self._leases.mark_closing(lease)
            if await conversation.wait_response_unless_joined(attachment):
                # A client joined the response: this teardown stands down (the joined
                # connection's own disconnect tears down later).
                if conversation.state is ConversationState.OPEN:
                    await self._leases.mark_live(lease)
                return
            await self._deps.writer.flush()
            flushed = True
        finally:
            if conversation.attachment == attachment:
                await self._finish_tear_down(conversation, lease, flushed=flushed)

    async def _finish_tear_down(
        self, conversation: Conversation, lease: Lease, *, flushed: bool
    ) -> None:
        try:
            # Even when shutdown cancels the teardown, the summary is marked pending, so
            # an instance makes it. Marked before the release: a session without a lease
            # never looks like one a dead instance left unsummarized.
            if conversation.has_messages:
                await self._request_summary(conversation.session_id)
        finally:
            # Released before a local resume may proceed, so it never loses the new lease.
            # Not while its events may still be queued (shutdown cut the flush short): they
            # are spilled, and their replay needs the lease they were made under. It expires,
            # or the next process in this slot frees it after the replay.
            if flushed:
                await self._leases.release(lease)
                self._deps.writer.forget(lease)
            self._forget(conversation)

    def _forget(self, conversation: Conversation) -> None:
        if self._live.get(conversation.session_id) is conversation:
            del self._live[conversation.session_id]
        conversation.mark_closed()

    async def _request_summary(self, session_id: str) -> None:
        try:
            await self._summarizer.request(session_id)
        except StoreError as e:
            # Not lost: a session whose events go past its summary and that holds no lease is
            # found by the summary poll (`unsummarized_sessions`).
            log.warning("could not ask for the summary of %s: %s", session_id, e)

    async def drain(self, *, grace_s: float) -> None:
        """Shutdown: refuse new connections, let responses finish within `grace_s`, cancel
        the rest (they are stored as cancelled), flush (bounded by the same grace), and close
        every socket with 1001."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        conversations = list(self._live.values())
        for conversation in conversations:
            conversation.stop_for_shutdown()
        waits = [asyncio.ensure_future(c.wait_response()) for c in conversations]
        if waits:
            _, late = await asyncio.wait(waits, timeout=grace_s)
            for conversation in conversations:
                conversation.cancel_response()
            if late:
                # A cancelled response closes itself at once; one stuck on the store does not.
                await asyncio.wait(late, timeout=max(deadline - loop.time(), 0.5))
                for wait in late:
                    wait.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                await self._deps.writer.flush()
        for conversation in conversations:
            await conversation.close_connection(CloseCode.GOING_AWAY, "server shutting down")
        if self._remote is not None:
            # Joined to responses of other instances: resume there or anywhere else.
            for join in self._remote.active():
                await join.close_connection(CloseCode.GOING_AWAY, "server shutting down")
