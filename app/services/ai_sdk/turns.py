"""Chat turns of AI SDK clients: a message (or a regenerate) in, one answer out as UI message
chunks, through the same conversations, store and joins as the WebSocket protocol.

Each turn is a connection to its session for as long as its answer streams: when its client
leaves, the answer runs on and is stored (as after a WebSocket disconnect), and a resume joins it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.database.base import Store
from app.protocol import (
    ErrorCode,
    ErrorFrame,
    ResponseCancelIn,
    ResponseFrame,
    ServerFrame,
    SessionReady,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
    UserMessageIn,
)
from app.services.ai_sdk.chat_ids import check_chat_id, derived_session_id
from app.services.ai_sdk.ui_messages import UIMessage, stored_answer_frames, ui_messages
from app.services.ai_sdk.ui_stream import Chunk, UIStreamEncoder
from app.services.conversation import Conversation
from app.services.hub import Connection, ConnectRefused, SessionHub, parse_session_id, visible_to
from app.services.response_feed import FeedFollower, FollowerOverflow

log = logging.getLogger(__name__)

# Frames a turn's reader may fall behind before it is dropped (the answer goes on, stored).
FRAMES_BEHIND_LIMIT = 10_000


class ChatRefused(Exception):
    """A turn cannot start; `code` says why (HTTP maps it to a status)."""

    def __init__(self, code: ErrorCode, message: str, *, resets_at: datetime | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.resets_at = resets_at

    @classmethod
    def of_frame(cls, frame: ErrorFrame) -> ChatRefused:
        return cls(frame.code, frame.message, resets_at=frame.resets_at)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a turn needs of the AI SDK's request body."""

    chat_id: str
    regenerate: bool
    # submit: the new user message (its UIMessage id is the idempotency key).
    text: str = ""
    message_id: str | None = None
    # regenerate: the answer to replace (None: the last).
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class _Closed:
    """The conversation closed the turn's connection (its session was deleted or moved)."""

    reason: str


class QueueSink:
    """A conversation's frames for one turn, queued for its reader; never blocks the sender."""

    def __init__(self, *, limit: int = FRAMES_BEHIND_LIMIT) -> None:
        self._queue: asyncio.Queue[ServerFrame | _Closed] = asyncio.Queue()
        self._limit = limit
        self.closed = False

    async def send(self, frame: ServerFrame) -> None:
        if self.closed:
            return
        if self._queue.qsize() >= self._limit:
            log.warning("dropping an AI SDK reader that fell too far behind")
            await self.close(1008, "the reader fell too far behind; resume to continue")
            return
        self._queue.put_nowait(frame)

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_Closed(reason))

    def queued(self) -> list[ServerFrame]:
        """The frames sent so far and not read, taken without waiting."""
        frames: list[ServerFrame] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Closed):
                self._queue.put_nowait(item)  # stays the last thing to read
                break
            frames.append(item)
        return frames

    async def next(self, timeout_s: float) -> ServerFrame | _Closed | None:
        """The next frame, or None when none came within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._queue.get()
        except TimeoutError:
            return None


class FrameSource(Protocol):
    """Where a turn reads its answer's frames from."""

    async def next(self, timeout_s: float) -> ServerFrame | _Closed | None:
        """The next frame (or the end of the source), or None after `timeout_s` without one."""
        ...


class FollowedFeed:
    """A passive reader of a response running here: another reader holds the connection (a
    second tab, or a reload the server has not seen leave yet)."""

    def __init__(self, follower: FeedFollower) -> None:
        self._follower = follower

    async def next(self, timeout_s: float) -> ServerFrame | _Closed | None:
        try:
            return await self._follower.next_frame(timeout_s)
        except FollowerOverflow:
            return _Closed("the reader fell too far behind; resume to continue")


class Turn:
    """One answer streaming to one AI SDK reader, as UI message chunks: the frames so far
    (`first`), then those of `source` until the answer's end."""

    def __init__(
        self,
        *,
        session_id: str,
        model: str,
        first: Sequence[ServerFrame],
        source: FrameSource | None = None,
        stop: Callable[[], Awaitable[None]] | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._first = list(first)
        self._source = source
        self._stop = stop
        self._release = release
        self._encoder = UIStreamEncoder(session_id=session_id, model=model)

    @classmethod
    def of_connection(
        cls,
        hub: SessionHub,
        connection: Connection,
        sink: QueueSink,
        *,
        session_id: str,
        model: str,
        first: Sequence[ServerFrame],
    ) -> Turn:
        """A turn that holds the session's connection (released when the reader leaves)."""

        async def stop() -> None:
            await connection.handle(ResponseCancelIn(type="response.cancel"))

        return cls(
            session_id=session_id,
            model=model,
            first=first,
            source=sink,
            stop=stop,
            release=lambda: hub.disconnect(connection),
        )

    async def chunks(self, *, idle_s: float) -> AsyncIterator[Chunk | None]:
        """The answer's chunks through its end; None after `idle_s` without one (a keep-alive
        for the transport to send)."""
        for frame in self._first:
            for chunk in self._encoder.encode(frame):
                yield chunk
        while not self._encoder.ended and self._source is not None:
            item = await self._source.next(idle_s)
            if item is None:
                yield None
            elif isinstance(item, _Closed):
                for chunk in self._encoder.interrupted(item.reason):
                    yield chunk
                return
            else:
                for chunk in self._encoder.encode(item):
                    yield chunk

    async def cancel(self) -> None:
        """Stop the answer (it is stored as cancelled; readers get `abort`)."""
        if self._stop is not None and not self._encoder.ended:
            await self._stop()

    def close(self) -> None:
        """The reader is gone (or done): the answer runs on without it. Idempotent."""
        release, self._release = self._release, None
        if release is not None:
            release()


class ChatTurns:
    """The AI SDK's chats on this server: turns, resumes, stops and the stored messages."""

    def __init__(self, hub: SessionHub, store: Store, *, model: str) -> None:
        self._hub = hub
        self._store = store
        self._model = model

    async def session_of(self, chat_id: str, owner: str | None) -> str:
        """The session of the caller's chat: a session id of theirs is that session (a
        WebSocket session continued with useChat); any other id is theirs alone."""
        check_chat_id(chat_id)
        session_id = parse_session_id(chat_id)
        if session_id is not None:
            record = await self._store.sessions.get(session_id)
            if record is not None and visible_to(record, owner):
                return session_id
        return derived_session_id(chat_id, owner)

    async def submit(
        self, request: ChatRequest, *, owner: str | None, credentials: str | None
    ) -> Turn:
        """Take the message (or the regenerate) and start its answer; `ChatRefused` if not."""
        session_id = await self.session_of(request.chat_id, owner)
        sink = QueueSink()
        try:
            connection, ready = await self._hub.connect_chat(
                session_id, owner=owner, sink=sink, credentials=credentials
            )
        except ConnectRefused as e:
            raise ChatRefused(e.code, e.message) from e
        try:
            if ready.live_response is not None or not isinstance(connection, Conversation):
                raise ChatRefused(
                    ErrorCode.RESPONSE_IN_PROGRESS,
                    "an answer is still running in this chat: resume it, or stop it",
                )
            first = await self._start(connection, sink, request)
        except BaseException:
            self._hub.disconnect(connection)
            raise
        if not connection.responding:
            # A resent message that was answered before: its stored answer, once more.
            self._hub.disconnect(connection)
            return Turn(session_id=session_id, model=self._model, first=first)
        return Turn.of_connection(
            self._hub, connection, sink, session_id=session_id, model=self._model, first=first
        )

    async def _start(
        self, conversation: Conversation, sink: QueueSink, request: ChatRequest
    ) -> list[ServerFrame]:
        """Hand the request to the conversation; the frames it answered with so far."""
        stored = (
            None if request.message_id is None else conversation.stored_message(request.message_id)
        )
        if stored is not None and stored.text != request.text:
            raise ChatRefused(
                ErrorCode.INVALID_EVENT,
                "this message id is stored with other text: sent messages cannot be edited",
            )
        if request.regenerate and not _sends_again(conversation, request, stored):
            refusal = await conversation.regenerate(request.replaces, kept=request.message_id)
            if refusal is not None:
                raise ChatRefused(*refusal)
        else:
            message = UserMessageIn(type="user.message", text=request.text, id=request.message_id)
            await conversation.handle(message)
        frames = sink.queued()
        for frame in frames:
            if isinstance(frame, ErrorFrame):
                raise ChatRefused.of_frame(frame)
        if conversation.responding:
            return frames
        acknowledged = next((f for f in frames if isinstance(f, UserMessageEvent)), None)
        if acknowledged is None:
            raise ChatRefused(ErrorCode.INTERNAL_ERROR, "the message was not taken; send it again")
        return list(stored_answer_frames(conversation.events, acknowledged.seq))

    async def resume(
        self, chat_id: str, *, owner: str | None, credentials: str | None
    ) -> Turn | None:
        """The chat's running answer from its start, then live; None when none runs. The
        first reader to come holds the session's connection; while it does, more readers of
        an answer running here follow it passively (several tabs; a reload the server has not
        yet seen leave)."""
        session_id = await self.session_of(chat_id, owner)
        if not await self._hub.response_running(session_id):
            return None
        sink = QueueSink()
        try:
            connection, ready = await self._hub.connect(
                session_id, after_seq=0, owner=owner, sink=sink, credentials=credentials
            )
        except ConnectRefused as e:
            if e.code is ErrorCode.SESSION_NOT_FOUND:
                return None
            if e.code is ErrorCode.SESSION_BUSY:
                return await self._follow_busy(session_id, owner, e)
            raise ChatRefused(e.code, e.message) from e
        # No await from the connect to this: these frames and the sink's are the whole.
        first = self._hub.frames_before_join(connection)
        if ready.live_response is None:
            self._hub.disconnect(connection)
            return None
        first += _stored_steps_missing(first, ready)
        self._hub.opened(connection)  # a join of another instance's answer starts relaying
        return Turn.of_connection(
            self._hub, connection, sink, session_id=session_id, model=self._model, first=first
        )

    async def _follow_busy(
        self, session_id: str, owner: str | None, refused: ConnectRefused
    ) -> Turn | None:
        """Another reader holds the session: follow its answer if it runs here."""
        record = await self._store.sessions.get(session_id)
        if record is None or not visible_to(record, owner):
            return None
        feed = self._hub.live_responses.of_session(session_id)
        if feed is None:
            raise ChatRefused(refused.code, refused.message)
        first, follower = feed.follow()
        return Turn(
            session_id=session_id,
            model=self._model,
            first=first,
            source=FollowedFeed(follower),
            stop=_async(feed.cancel),
            release=follower.stop,
        )

    async def stop(self, chat_id: str, *, owner: str | None) -> bool:
        """Cancel the chat's running answer; False when none runs."""
        session_id = await self.session_of(chat_id, owner)
        # A chat whose first message is still being stored has no stored record yet.
        record = self._hub.live_record(session_id) or await self._store.sessions.get(session_id)
        if record is None or not visible_to(record, owner):
            return False
        return await self._hub.cancel_running(session_id)

    async def messages(self, chat_id: str, *, owner: str | None) -> list[UIMessage]:
        """The chat as UIMessages (none for a chat that does not exist yet)."""
        session_id = await self.session_of(chat_id, owner)
        record = await self._store.sessions.get(session_id)
        if record is None or not visible_to(record, owner):
            return []
        events = self._hub.live_events(session_id)
        if events is None:
            events = await self._store.events.read(session_id)
        return ui_messages(events, session_id=session_id)


def _async(call: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        call()

    return run


def _sends_again(
    conversation: Conversation, request: ChatRequest, stored: UserMessageEvent | None
) -> bool:
    """A regenerate whose user message was never stored (its turn was refused) or never
    answered: useChat's "retry" of that message, which is sent, not a new answer to the one
    before it."""
    if request.message_id is None:
        return False
    return stored is None or conversation.unanswered(stored)


def _stored_steps_missing(
    first: Sequence[ResponseFrame], ready: SessionReady
) -> list[ToolCallEvent | ToolResultEvent]:
    """Tool calls and results of the joined answer that are stored but not among its frames so
    far: the message bus of another instance may lag behind the store (a join sends them in
    `session.ready`; the rest of the join then skips them). Here they are always none."""
    live = ready.live_response
    assert live is not None
    have = {f.seq for f in first if isinstance(f, ToolCallEvent | ToolResultEvent)}
    return [
        event
        for event in ready.events
        if isinstance(event, ToolCallEvent | ToolResultEvent)
        and event.response_id == live.response_id
        and event.seq not in have
    ]
