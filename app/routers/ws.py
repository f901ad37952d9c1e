"""The WebSocket transport: accept, check, attach to a session, parse frames, send frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from app.logs import session_id_var
from app.protocol import (
    CloseCode,
    ErrorCode,
    ErrorFrame,
    ServerFrame,
    client_frame_adapter,
)
from app.routers.deps import bearer_token
from app.services.auth import Unauthorized
from app.services.conversation import Conversation
from app.services.hub import ConnectRefused
from app.services.rate_limit import FrameRateLimiter, Verdict
from app.services.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter()

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
_CLOSE_CODES = {
    ErrorCode.INVALID_REQUEST: CloseCode.INVALID_REQUEST,
    ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    ErrorCode.FORBIDDEN: CloseCode.FORBIDDEN,
    ErrorCode.SESSION_NOT_FOUND: CloseCode.NOT_FOUND,
    ErrorCode.SESSION_BUSY: CloseCode.BUSY,
}


class WebSocketSink:
    """Sends frames on one socket, one at a time; after the client left, sends are dropped.

    A client that stops reading fills the socket's buffer and blocks its sends. After
    `send_timeout_s` it is dropped: the response goes on and is stored, the client can resume
    with `after_seq`, and neither its memory nor the upstream request stays held by it.
    """

    def __init__(self, websocket: WebSocket, *, send_timeout_s: float = 10.0) -> None:
        self._websocket = websocket
        self._send_timeout_s = send_timeout_s
        self._lock = asyncio.Lock()
        # The connection's handler, stopped when its client is dropped.
        self._handler = asyncio.current_task()
        self.closed = False
        self.dropped = False

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (a no-op when the client already left)."""
        if self.closed:
            return
        self.closed = True
        async with self._lock:
            await self._close_now(code, reason)

    async def send(self, frame: ServerFrame) -> None:
        if self.closed:
            return
        # The model's own core serializer: the same JSON as `model_dump_json()` at a third of the
        # cost per frame (no per-call argument handling); see docs/performance.md.
        data = frame.__pydantic_serializer__.to_json(frame).decode()
        async with self._lock:
            try:
                async with asyncio.timeout(self._send_timeout_s):
                    await self._websocket.send_text(data)
            except TimeoutError:
                self._drop()
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True

    def _drop(self) -> None:
        # Not even a close frame can pass a full buffer (uvicorn waits for room before any
        # send), so the handler is stopped: the session is torn down as after a disconnect.
        log.warning("dropping a client that stopped reading")
        self.closed = self.dropped = True
        if self._handler is not None and self._handler is not asyncio.current_task():
            self._handler.cancel()

    async def _close_now(self, code: int, reason: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._websocket.close(code=code, reason=reason)


class Refusal(Exception):
    """The connection is refused after the handshake: an `error` frame, then a close code."""

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """No Origin (not a browser), the same origin, localhost, or one of `ALLOWED_ORIGINS`."""
    if origin is None or "*" in allowed:
        return True
    parts = urlsplit(origin)
    if host is not None and parts.netloc == host:
        return True
    if (parts.hostname or "") in _LOCAL_HOSTS:
        return True
    return origin.rstrip("/") in {entry.rstrip("/") for entry in allowed}


def parse_after_seq(raw: str | None) -> int:
    if raw is None:
        return 0
    if not raw.isascii() or not raw.isdigit():
        raise Refusal(ErrorCode.INVALID_REQUEST, "after_seq must be a non-negative integer")
    return int(raw)


async def authorize(websocket: WebSocket, runtime: Runtime) -> str | None:
    if not origin_allowed(
        websocket.headers.get("origin"),
        websocket.headers.get("host"),
        runtime.settings.allowed_origins,
    ):
        raise Refusal(ErrorCode.FORBIDDEN, "this origin may not open sessions")
    token = bearer_token(
        websocket.headers.get("authorization"), websocket.query_params.get("token")
    )
    try:
        return await runtime.auth.owner_of(token)
    except Unauthorized as e:
        raise Refusal(ErrorCode.UNAUTHORIZED, str(e)) from e


async def refuse(websocket: WebSocket, refusal: Refusal) -> None:
    frame = ErrorFrame(code=refusal.code, message=refusal.message, retryable=refusal.retryable)
    sink = WebSocketSink(websocket)
    await sink.send(frame)
    await sink.close(_CLOSE_CODES.get(refusal.code, CloseCode.INVALID_REQUEST), refusal.message)


@router.websocket("/ws")
async def chat_socket(websocket: WebSocket) -> None:
    """One client connection to one session (new or resumed)."""
    runtime: Runtime = websocket.app.state.runtime
    await websocket.accept()
    sink = WebSocketSink(websocket, send_timeout_s=runtime.settings.ws_send_timeout_s)
    try:
        owner = await authorize(websocket, runtime)
        after_seq = parse_after_seq(websocket.query_params.get("after_seq"))
        session_id = websocket.query_params.get("session_id") or None
        conversation, ready = await runtime.hub.connect(
            session_id, after_seq=after_seq, owner=owner, sink=sink
        )
    except ConnectRefused as e:
        await refuse(websocket, Refusal(e.code, e.message, retryable=e.retryable))
        return
    except Refusal as e:
        await refuse(websocket, e)
        return
    runtime.metrics.open_connections.inc()
    # Logs of this connection and of the tasks it starts carry the session id.
    session_id_var.set(ready.session_id)
    try:
        await sink.send(ready)
        await _serve(websocket, sink, conversation, runtime)
    except asyncio.CancelledError:
        if not sink.dropped:
            raise
        # Our own drop of a client that stopped reading: end the connection normally.
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
    finally:
        sink.closed = True
        runtime.hub.disconnect(conversation)
        runtime.metrics.open_connections.dec()


async def _serve(
    websocket: WebSocket, sink: WebSocketSink, conversation: Conversation, runtime: Runtime
) -> None:
    """Read frames until the client leaves or must be closed."""
    limiter = FrameRateLimiter(per_minute=runtime.settings.max_messages_per_minute)
    max_bytes = runtime.settings.ws_max_bytes
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text, data = message.get("text"), message.get("bytes")
        # Size and flood limits hold for every frame, binary ones included.
        if (text is not None and _too_large(text, max_bytes)) or len(data or b"") > max_bytes:
            await sink.close(CloseCode.TOO_LARGE, "frame too large")
            return
        verdict = limiter.check()
        if verdict is Verdict.DISCONNECT:
            await sink.close(CloseCode.POLICY_VIOLATION, "too many messages")
            return
        if verdict is Verdict.REFUSE:
            await conversation.send_error(
                ErrorCode.RATE_LIMITED, "too many messages; slow down", retryable=True
            )
        elif text is None:
            await conversation.send_error(ErrorCode.INVALID_EVENT, "binary frames are not accepted")
        else:
            await _dispatch(text, conversation)


def _too_large(text: str, max_bytes: int) -> bool:
    # Characters are 1 to 4 bytes: only encode when the length alone does not decide.
    if len(text) > max_bytes:
        return True
    return len(text) * 4 > max_bytes and len(text.encode()) > max_bytes


async def _dispatch(text: str, conversation: Conversation) -> None:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        await conversation.send_error(ErrorCode.INVALID_JSON, "the frame is not valid JSON")
        return
    try:
        frame = client_frame_adapter.validate_python(data)
    except ValidationError as e:
        await conversation.send_error(ErrorCode.INVALID_EVENT, _describe_invalid(e))
        return
    await conversation.handle(frame)


def _describe_invalid(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "frame"
    return f"invalid frame at {where}: {first['msg']}"
