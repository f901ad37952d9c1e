"""The Vercel AI SDK's WebSocket chat transport (`WebSocketChatTransport`) at `/api/chat/ws`:
many requests on one socket, each a turn or a resume, correlated by `requestId`.

Its wire format is the `ai` package's (docs/07-reference/02-ai-sdk-ui/
51-websocket-chat-transport.mdx): `send`, `resume` and `abort` in; `start`, `chunk` (with a
`sequence` from 0 per request), `end`, `error` and `no-active` out. A frame that is not one of
these closes the socket with 1008, as the transport itself does with a malformed answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.types import Message

from app.database.base import StoreError
from app.protocol import CloseCode
from app.routers.ai_sdk import chat_turns
from app.routers.ws import (
    Refusal,
    _verified_token,
    authorize,
    check_connection_rate,
    close_code_of,
)
from app.routers.ws_sink import ClientDropped, WebSocketSink
from app.services.ai_sdk import ChatRefused, ChatTurns, Turn
from app.services.ai_sdk.requests import (
    AbortFrame,
    BadChatRequest,
    ResumeFrame,
    SendFrame,
    chat_request,
    transport_frame_adapter,
)
from app.services.rate_limit import FrameRateLimiter, Verdict
from app.services.runtime import Runtime
from app.services.tracing import ConnectionSpan

log = logging.getLogger(__name__)
router = APIRouter()

# Requests one socket may have running at once (each follows one chat's answer).
MAX_REQUESTS_PER_SOCKET = 16
# How long a refused socket waits for the request it then answers with the refusal.
REFUSAL_WAIT_S = 2.0
_IDLE_S = 30.0  # uvicorn's own pings keep the socket alive; chunks need no keep-alive


@dataclass(slots=True)
class _Request:
    """A request of the socket: its task, and the turn once it has one."""

    task: asyncio.Task[None] | None = None
    turn: Turn | None = None
    aborted: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


@router.websocket("/api/chat/ws")
async def chat_transport_socket(websocket: WebSocket) -> None:
    """One `WebSocketChatTransport` connection, traced as one span."""
    runtime: Runtime = websocket.app.state.runtime
    with runtime.tracing.connection(websocket.headers, path="/api/chat/ws") as span:
        await _connection(websocket, runtime, span)


async def _connection(websocket: WebSocket, runtime: Runtime, span: ConnectionSpan) -> None:
    await websocket.accept()
    try:
        check_connection_rate(websocket, runtime)
        owner = await authorize(websocket, runtime)
    except Refusal as e:
        span.refused(e.code.value)
        await _refuse(websocket, e)
        return
    socket = TransportSocket(websocket, runtime, owner)
    try:
        await socket.serve()
    except ClientDropped:
        pass
    except asyncio.CancelledError:
        if not socket.sink.dropped:
            raise
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()  # our own drop of a client that stopped reading
    finally:
        await socket.end()


async def _refuse(websocket: WebSocket, refusal: Refusal) -> None:
    """The transport opens its socket, then sends its request at once: that request is
    answered with the refusal (so `useChat` shows why, whichever comes first at the client),
    then the socket closes with the code /ws uses. A client that sends nothing within
    REFUSAL_WAIT_S just gets the close."""
    with contextlib.suppress(TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        async with asyncio.timeout(REFUSAL_WAIT_S):
            request_id = _request_id(await websocket.receive())
            if request_id is not None:
                error = {"type": "error", "requestId": request_id, "errorText": refusal.message}
                await websocket.send_text(orjson.dumps(error).decode())
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.close(code=close_code_of(refusal), reason=refusal.message[:120])


def _request_id(message: Message) -> str | None:
    """The `requestId` of a received frame, if it is a JSON object that has a string one."""
    text = message.get("text")
    try:
        frame = orjson.loads(text) if isinstance(text, str) else None
    except orjson.JSONDecodeError:
        return None
    request_id = frame.get("requestId") if isinstance(frame, dict) else None
    return request_id if isinstance(request_id, str) and len(request_id) <= 128 else None


class TransportSocket:
    """One `WebSocketChatTransport` connection and its requests."""

    def __init__(self, websocket: WebSocket, runtime: Runtime, owner: str | None) -> None:
        self._websocket = websocket
        self._runtime = runtime
        self._owner = owner
        self._credentials = _verified_token(websocket, owner)
        self._turns: ChatTurns = chat_turns(runtime)
        self.sink = WebSocketSink(websocket, send_timeout_s=runtime.settings.ws_send_timeout_s)
        self._requests: dict[str, _Request] = {}
        self._limiter = FrameRateLimiter(per_minute=runtime.settings.max_messages_per_minute)

    async def serve(self) -> None:
        """Read frames until the client leaves or sends one that breaks the protocol."""
        max_bytes = self._runtime.settings.ws_max_bytes
        while True:
            message = await self._websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None or len(text) > max_bytes:
                code = CloseCode.TOO_LARGE if text is not None else CloseCode.POLICY_VIOLATION
                await self.sink.close(code, "frames are JSON text within the size limit")
                return
            try:
                frame = transport_frame_adapter.validate_python(orjson.loads(text))
            except (orjson.JSONDecodeError, ValidationError):
                await self.sink.close(CloseCode.POLICY_VIOLATION, "invalid frame")
                return
            await self._dispatch(frame)

    async def _dispatch(self, frame: SendFrame | ResumeFrame | AbortFrame) -> None:
        if isinstance(frame, AbortFrame):
            await self._abort(frame.requestId)
            return
        if frame.requestId in self._requests:
            await self._error(frame.requestId, "this requestId is already in use on this socket")
            return
        if len(self._requests) >= MAX_REQUESTS_PER_SOCKET:
            await self._error(frame.requestId, "too many requests running on this socket")
            return
        if isinstance(frame, SendFrame) and self._limiter.check() is not Verdict.ALLOW:
            await self._error(frame.requestId, "too many messages; slow down")
            return
        request = _Request()
        self._requests[frame.requestId] = request
        work = self._send(frame) if isinstance(frame, SendFrame) else self._resume(frame)
        request.task = asyncio.create_task(self._run(frame.requestId, request, work))

    async def _run(self, request_id: str, request: _Request, work: Any) -> None:
        try:
            await work
        except BadChatRequest as e:
            await self._error(request_id, str(e))
        except ChatRefused as e:
            await self._error(request_id, e.message)
        except StoreError as e:
            await self._error(request_id, _store_message(e))
        except Exception:
            log.exception("an AI SDK request failed")
            await self._error(request_id, "the server failed; please retry")
        finally:
            if request.turn is not None:
                request.turn.close()
            self._requests.pop(request_id, None)
            request.done.set()

    async def _send(self, frame: SendFrame) -> None:
        request = self._requests[frame.requestId]
        request.turn = await self._turns.submit(
            chat_request(frame), owner=self._owner, credentials=self._credentials
        )
        if request.aborted:
            await request.turn.cancel()
        await self._relay(frame.requestId, request.turn, after=-1)

    async def _resume(self, frame: ResumeFrame) -> None:
        request = self._requests[frame.requestId]
        request.turn = await self._turns.resume(
            frame.id, owner=self._owner, credentials=self._credentials
        )
        if request.turn is None:
            await self._write({"type": "no-active", "requestId": frame.requestId})
            return
        await self._write({"type": "start", "requestId": frame.requestId})
        if request.aborted:
            await request.turn.cancel()
        last = -1 if frame.lastSequence is None else frame.lastSequence
        await self._relay(frame.requestId, request.turn, after=last)

    async def _relay(self, request_id: str, turn: Turn, *, after: int) -> None:
        """The turn's chunks numbered from 0 (a resume replays from the answer's start)."""
        sequence = 0
        async for chunk in turn.chunks(idle_s=_IDLE_S):
            if chunk is None:
                continue
            if sequence > after:
                frame = {"type": "chunk", "requestId": request_id, "sequence": sequence}
                await self._write({**frame, "chunk": chunk})
            sequence += 1
        await self._write({"type": "end", "requestId": request_id})

    async def _abort(self, request_id: str) -> None:
        """The client stopped the request (useChat's `stop()`): stop its answer."""
        request = self._requests.get(request_id)
        if request is None:
            return  # finished already, or unknown: nothing to stop
        request.aborted = True
        if request.turn is not None:
            await request.turn.cancel()

    async def _error(self, request_id: str, message: str) -> None:
        await self._write({"type": "error", "requestId": request_id, "errorText": message})

    async def _write(self, frame: dict[str, Any]) -> None:
        await self.sink.send_text(orjson.dumps(frame).decode())

    async def end(self) -> None:
        """The socket is gone: its requests stop following (their answers run on, stored)."""
        self.sink.closed = True
        tasks = [r.task for r in self._requests.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def _store_message(error: Exception) -> str:
    log.warning("an AI SDK request could not reach the store: %s", error)
    return "the store is unavailable; retry shortly"
