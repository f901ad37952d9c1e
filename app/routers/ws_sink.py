"""Sending on one WebSocket: frames one at a time, and a client that stops reading dropped."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import WebSocket, WebSocketDisconnect

from app.protocol import ServerFrame

log = logging.getLogger(__name__)

# The first look at a send in flight comes this soon at most (then at its deadline): a
# connection that goes quiet holds no timer after a second (the first frame it is sent,
# `session.ready`, would otherwise keep one for the whole WS_SEND_TIMEOUT_S).
_FIRST_CHECK_S = 1.0


class ClientDropped(Exception):
    """The connection's own send to a client that stopped reading timed out: the handler ends."""


class WebSocketSink:
    """Sends frames on one socket, one at a time; after the client left, sends are dropped.

    A client that stops reading fills the socket's buffer and blocks its sends. After
    `send_timeout_s` it is dropped: the response goes on and is stored, the client can resume
    with `after_seq`, and neither its memory nor the upstream request stays held by it.

    The deadline is one timer per sink, not one per send: a send almost always returns at once
    (uvicorn writes to the transport unless its buffer is full), and `asyncio.timeout` costs
    about 10 µs per use, as much as the rest of a token's path through the server. The timer
    is armed by a send (to look again within a second) and, each time it fires, re-armed for
    the deadline of the send then in flight, or left off until the next send
    (docs/performance.md).
    """

    def __init__(self, websocket: WebSocket, *, send_timeout_s: float = 10.0) -> None:
        self._websocket = websocket
        self._send_timeout_s = send_timeout_s
        self._lock = asyncio.Lock()
        # The connection's handler, stopped when its client is dropped.
        self._handler = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._deadline: asyncio.TimerHandle | None = None
        # The send in flight: when it began and the task it blocks; the deadline's verdict.
        self._sending_since: float | None = None
        self._sender: asyncio.Task[object] | None = None
        self._send_expired = False
        self.closed = False
        self.dropped = False

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (a no-op when the client already left)."""
        if self.closed:
            return
        self.closed = True
        self._stop_deadline()
        async with self._lock:
            await self._close_now(code, reason)

    async def send(self, frame: ServerFrame) -> None:
        if self.closed:
            return
        # The model's own core serializer: the same JSON as `model_dump_json()` at a third of the
        # cost per frame (no per-call argument handling); see docs/performance.md.
        await self.send_text(frame.__pydantic_serializer__.to_json(frame).decode())

    async def send_text(self, data: str) -> None:
        """Send one text frame as it is (after the client left: dropped)."""
        if self.closed:
            return
        async with self._lock:
            if self.closed:
                return
            task = asyncio.current_task()
            self._begin_send(task)
            try:
                await self._websocket.send_text(data)
            except asyncio.CancelledError:
                # Cancelled by the deadline alone (`uncancel` leaves no other cancel): a drop.
                if not self._send_expired or task is None or task.uncancel() > 0:
                    raise
                self._drop()
                if task is self._handler:
                    raise ClientDropped from None
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True
            finally:
                self._sending_since = self._sender = None

    def _begin_send(self, task: asyncio.Task[object] | None) -> None:
        self._sending_since, self._sender = self._loop.time(), task
        if self._deadline is None:
            first_check = min(self._send_timeout_s, _FIRST_CHECK_S)
            self._deadline = self._loop.call_at(
                self._sending_since + first_check, self._check_deadline
            )

    def _check_deadline(self) -> None:
        """The timer fired: drop the client if the send in flight is past its deadline."""
        self._deadline = None
        if self._sending_since is None or self.closed:
            return  # no send in flight: the next one arms the timer again
        due = self._sending_since + self._send_timeout_s
        if self._loop.time() < due:
            self._deadline = self._loop.call_at(due, self._check_deadline)
        elif self._sender is not None:
            self._send_expired = True
            self._sender.cancel()

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _drop(self) -> None:
        # Not even a close frame can pass a full buffer (uvicorn waits for room before any
        # send), so the handler is stopped: the session is torn down as after a disconnect.
        # Stuck in its own send (a pong, an acknowledgement), the handler ends by the
        # `ClientDropped` its send raises; stuck elsewhere, it is cancelled.
        log.warning("dropping a client that stopped reading")
        self.closed = self.dropped = True
        self._stop_deadline()
        if self._handler is not None and self._handler is not asyncio.current_task():
            self._handler.cancel()

    async def _close_now(self, code: int, reason: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._websocket.close(code=code, reason=reason)
