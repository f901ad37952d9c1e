"""A client joined to a response that runs on another instance, through the message bus.

The connection is held here while the response runs there: its frames are read from the
response's Redis stream (from its start, then live) and sent on; a cancel goes back by pub/sub.
Once the response ended, the session's lease passes to this instance and the connection goes
on as an ordinary `Conversation`. When the bus fails mid-answer, or the other instance dies,
what the client missed comes from the store once the lease is here: nothing is lost, the
client's text stays a prefix of `response.done.text`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol, assert_never

from app.database.base import Lease, LeaseState, StoreError
from app.protocol import (
    AssistantMessageEvent,
    ClientFrame,
    ErrorCode,
    ErrorFrame,
    ErrorInfo,
    PingIn,
    Pong,
    ResponseCancelIn,
    ResponseDelta,
    ResponseDone,
    ResponseStatus,
    ServerFrame,
    ToolApprovalIn,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageIn,
)
from app.services.conversation import Conversation, Ending, FrameSink
from app.services.leases import LeaseKeeper
from app.services.response_bus import BusEntry, BusUnavailable, ResponseBus, gapless
from app.services.runner import done_frame
from app.services.states import check_transition

log = logging.getLogger(__name__)

# How long a read waits for the next frame before checking that the running instance lives.
FOLLOW_BLOCK_MS = 1000
# The join's claim outlives a few missed renewals (renewed every read and every lease poll).
CLAIM_TTL_S = 10.0
# How often the lease is asked for while the other instance finishes.
TAKEOVER_POLL_S = 0.1


class JoinHost(Protocol):
    """What a remote join needs from the hub."""

    async def adopt(self, join: RemoteJoin, lease: Lease) -> Conversation | None:
        """The lease is here: the session's `Conversation` for this connection (None when
        the session is gone; the lease is released)."""
        ...

    def join_ended(self, join: RemoteJoin) -> None: ...

    def disconnect(self, connection: Conversation) -> None:
        """The client left just as its join became a conversation: tear that down."""
        ...


class JoinState(Enum):
    """Where a remote join is; changed only through `RemoteJoin._move`."""

    FOLLOWING = "following"  # relaying the other instance's frames
    TAKING_OVER = "taking_over"  # the response ended (or the bus failed): waiting for the lease
    CONVERSATION = "conversation"  # the lease is here: an ordinary conversation
    ENDED = "ended"


_JOIN_TRANSITIONS: dict[JoinState, frozenset[JoinState]] = {
    JoinState.FOLLOWING: frozenset({JoinState.TAKING_OVER, JoinState.ENDED}),
    JoinState.TAKING_OVER: frozenset({JoinState.CONVERSATION, JoinState.ENDED}),
    JoinState.CONVERSATION: frozenset(),
    JoinState.ENDED: frozenset(),
}


@dataclass(slots=True)
class _Seen:
    """What the client has been sent of the response."""

    text: list[str] = field(default_factory=list)
    last_seq: int = 0
    done: bool = False
    next_index: int = 0
    last_entry: str = "0"


class RemoteJoin:
    """One client connection joined to a response running on another instance."""

    def __init__(
        self,
        host: JoinHost,
        *,
        session_id: str,
        response_id: str,
        frames: Sequence[BusEntry],
        bus: ResponseBus,
        leases: LeaseKeeper,
        sink: FrameSink,
        claim_token: str,
        sent_upto_seq: int,
    ) -> None:
        self.session_id = session_id
        self.response_id = response_id
        self.state = JoinState.FOLLOWING
        self._host = host
        self._bus = bus
        self._leases = leases
        self._sink: FrameSink | None = sink
        self.claim_token = claim_token
        self._seen = _Seen(last_seq=sent_upto_seq)
        # The response's frames from its start up to the join (an HTTP resume replays them).
        self.frames_before_join = [entry.frame for entry in frames]
        for entry in frames:
            self._note(entry)
        self._conversation: Conversation | None = None
        # The client's verified token, handed to the conversation it becomes (MCP servers).
        self.credentials: str | None = None
        self._settled = asyncio.Event()  # the conversation is here, or the join ended
        self._task: asyncio.Task[None] | None = None
        self._lease: Lease | None = None

    @staticmethod
    def new_claim_token() -> str:
        return uuid.uuid4().hex

    @property
    def conversation(self) -> Conversation | None:
        return self._conversation

    @property
    def sink(self) -> FrameSink | None:
        """The client's connection; None once it left."""
        return self._sink

    # -- the connection's side -----------------------------------------------------------

    def start(self, task_factory: TaskFactory) -> None:
        """Begin relaying (after `session.ready` was sent)."""
        self._task = task_factory(self._run(), f"join-{self.session_id}")

    async def handle(self, frame: ClientFrame) -> None:
        if self._conversation is not None:
            await self._conversation.handle(frame)
        elif isinstance(frame, PingIn):
            await self._send(Pong())
        elif isinstance(frame, ResponseCancelIn):
            await self._cancel()
        elif isinstance(frame, UserMessageIn):
            await self._message_while_joined(frame)
        elif isinstance(frame, ToolApprovalIn):
            # Answers go to the instance running the response; this one only relays it.
            await self.send_error(
                ErrorCode.APPROVAL_NOT_PENDING,
                "this connection follows a response running on another instance; answer "
                "after reconnecting once it has ended, or from a connection there",
            )
        else:
            assert_never(frame)

    async def send_error(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        if self._conversation is not None:
            await self._conversation.send_error(code, message, retryable=retryable)
        else:
            await self._send(ErrorFrame(code=code, message=message, retryable=retryable))

    def leave(self) -> Conversation | None:
        """The client left: stop relaying; the conversation to tear down, if there is one."""
        self._sink = None
        if self._conversation is None and self._task is not None:
            self._task.cancel()
        elif self._task is None:
            # Gone before `session.ready` went out: the relay never started.
            self._move(JoinState.ENDED)
            self._host.join_ended(self)
        return self._conversation

    def _move(self, new: JoinState) -> None:
        self.state = check_transition(_JOIN_TRANSITIONS, self.state, new)

    async def close_connection(self, code: int, reason: str) -> None:
        if self._conversation is not None:
            await self._conversation.close_connection(code, reason)
        elif self._sink is not None:
            await self._sink.close(code, reason)

    async def _message_while_joined(self, frame: UserMessageIn) -> None:
        if not self._seen.done:
            await self.send_error(
                ErrorCode.RESPONSE_IN_PROGRESS, "wait for the current response or cancel it"
            )
            return
        # The response ended; the lease is on its way: the message waits for the conversation.
        await self._settled.wait()
        if self._conversation is not None:
            await self._conversation.handle(frame)

    async def _cancel(self) -> None:
        if self._seen.done:
            await self.send_error(ErrorCode.NO_ACTIVE_RESPONSE, "no response is running")
            return
        try:
            await self._bus.cancel(self.response_id)
        except BusUnavailable as e:
            log.warning("could not pass a cancel to the instance running it: %s", e)
            await self.send_error(
                ErrorCode.INTERNAL_ERROR, "the cancel could not be passed on; retry", retryable=True
            )

    async def _send(self, frame: ServerFrame) -> None:
        if self._sink is not None:
            await self._sink.send(frame)

    # -- relaying ----------------------------------------------------------------------------

    def _note(self, entry: BusEntry) -> bool:
        """Account for a frame read from the bus; False for a stored event the client already
        has in `session.ready` (the store may be ahead of the bus)."""
        self._seen.next_index = entry.index + 1
        self._seen.last_entry = entry.entry_id
        frame = entry.frame
        if isinstance(frame, ResponseDelta):
            self._seen.text.append(frame.text)
        elif isinstance(frame, ResponseDone):
            self._seen.done = True
            self._seen.last_seq = max(self._seen.last_seq, frame.seq)
        elif isinstance(frame, ToolCallEvent | ToolResultEvent):
            if frame.seq <= self._seen.last_seq:
                return False
            self._seen.last_seq = frame.seq
        return True

    async def _run(self) -> None:
        try:
            await self._follow()
            self._move(JoinState.TAKING_OVER)
            lease = self._lease or await self._take_lease()
            if lease is None:
                return
            self._lease = lease
            conversation = await self._host.adopt(self, lease)
            if conversation is None:
                return
            # No await between the adoption and this: `leave` sees one or the other.
            self._conversation = conversation
            self._move(JoinState.CONVERSATION)
            self._settled.set()
            await self.catch_up(conversation)
        finally:
            await self._finish()

    async def _finish(self) -> None:
        self._settled.set()
        if self._conversation is None:
            if self.state is not JoinState.ENDED:
                self._move(JoinState.ENDED)
            if self._lease is not None:
                await self._leases.release(self._lease)
        elif self._sink is None:
            self._host.disconnect(self._conversation)  # left while it was being adopted
        self._host.join_ended(self)

    async def _follow(self) -> None:
        """Relay frames until `response.done`; return early (to take over from the store) when
        the bus fails, a frame is missing, or the lease came free (the other instance died)."""
        while not self._seen.done:
            try:
                entries = await self._bus.read(
                    self.response_id, after=self._seen.last_entry, block_ms=FOLLOW_BLOCK_MS
                )
                await self._bus.renew_claim(self.session_id, ttl_s=CLAIM_TTL_S)
            except BusUnavailable as e:
                log.warning(
                    "lost the message bus while joined; waiting for the stored result: %s", e
                )
                return
            if not gapless(entries, self._seen.next_index):
                log.warning("frames of %s missing on the bus; using the store", self.response_id)
                return
            for entry in entries:
                if self._note(entry):
                    await self._send(entry.frame)
            if not entries and await self._lease_came_free():
                return

    async def _lease_came_free(self) -> bool:
        try:
            taken = await self._leases.try_take(self.session_id)
        except StoreError:
            return False
        if isinstance(taken, Lease):
            self._lease = taken
            return True
        return False

    async def _take_lease(self) -> Lease | None:
        """Wait while the other instance finishes; None when the session is gone or someone
        else's client holds it (the client is told)."""
        while True:
            try:
                taken = await self._leases.try_take(self.session_id)
            except StoreError:
                taken = LeaseState.CLOSING  # the store is down: ask again
            if isinstance(taken, Lease):
                return taken
            if taken is None:
                await self.end(_DELETED)
                return None
            if taken is LeaseState.LIVE:
                await self.end(_TAKEN)
                return None
            # The claim only guards against a second join while the bus works.
            with contextlib.suppress(BusUnavailable):
                await self._bus.renew_claim(self.session_id, ttl_s=CLAIM_TTL_S)
            # Polling a condition: the other instance has no channel to us when the bus is down.
            await asyncio.sleep(TAKEOVER_POLL_S)

    async def end(self, ending: Ending) -> None:
        """The join cannot go on: tell the client why and close its socket."""
        await self._send(
            ErrorFrame(code=ending.code, message=ending.message, retryable=ending.retryable)
        )
        if self._sink is not None:
            await self._sink.close(ending.close_code, ending.message)

    # -- catching up from the store (called by the hub with the new conversation) -----------

    async def catch_up(self, conversation: Conversation) -> None:
        """Send what the client missed of the response, from the store; when the response was
        never finished (its instance died), store it as failed and say so."""
        if self._seen.done:
            return
        missed = [
            event
            for event in conversation.events
            if isinstance(event, ToolCallEvent | ToolResultEvent)
            and event.response_id == self.response_id
            and event.seq > self._seen.last_seq
        ]
        for event in missed:
            await conversation.send(event)
        answer = next(
            (
                event
                for event in conversation.events
                if isinstance(event, AssistantMessageEvent)
                and event.response_id == self.response_id
            ),
            None,
        )
        seen_text = "".join(self._seen.text)
        if answer is None:
            await close_abandoned_response(conversation, self.response_id, seen_text)
            return
        if answer.text.startswith(seen_text) and len(answer.text) > len(seen_text):
            rest = answer.text[len(seen_text) :]
            await conversation.send(ResponseDelta(response_id=self.response_id, text=rest))
        await conversation.send(done_frame(answer))


async def close_abandoned_response(conversation: Conversation, response_id: str, text: str) -> None:
    """The instance that ran the session's response died mid-answer (its lease expired and was
    taken here): store the response as failed, with the text streamed so far and its open tool
    calls closed, and tell the client, so a joined client ends cleanly."""
    open_calls = {
        e.call_id: e
        for e in conversation.events
        if isinstance(e, ToolCallEvent) and e.response_id == response_id
    }
    for event in conversation.events:
        if isinstance(event, ToolResultEvent) and event.response_id == response_id:
            open_calls.pop(event.call_id, None)
    for call in open_calls.values():
        result = ToolResultEvent(
            seq=conversation.next_seq(),
            created_at=datetime.now(UTC),
            response_id=response_id,
            call_id=call.call_id,
            name=call.name,
            ok=False,
            error="aborted",
        )
        conversation.record(result)
        await conversation.send(result)
    message = AssistantMessageEvent(
        seq=conversation.next_seq(),
        created_at=datetime.now(UTC),
        response_id=response_id,
        status=ResponseStatus.FAILED,
        text=text,
        finish_reason="error",
        usage=None,
        model=conversation.session_record.model,
        error=ErrorInfo(
            code=ErrorCode.INTERNAL_ERROR,
            message="the server running this response stopped; please retry",
        ),
    )
    conversation.record(message)
    await conversation.send(done_frame(message))


class TaskFactory(Protocol):
    def __call__(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...


_DELETED = Ending(ErrorCode.SESSION_NOT_FOUND, "this session was deleted", 4404)
_TAKEN = Ending(ErrorCode.SESSION_BUSY, "this session is open in another connection", 4409)
