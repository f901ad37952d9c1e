"""The WebSocket transport: accept, check, attach to a session, parse frames, send frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, WebSocket
from pydantic import ValidationError

from app.logs import session_id_var
from app.protocol import (
    MAX_SEQ,
    CloseCode,
    ErrorCode,
    ErrorFrame,
    client_frame_adapter,
)
from app.routers.client_address import client_address
from app.routers.deps import bearer_token
from app.routers.hosts import host_refusal
from app.routers.ws_sink import ClientDropped, WebSocketSink
from app.services.auth import AuthUnavailable, Unauthorized
from app.services.hub import Connection, ConnectRefused
from app.services.rate_limit import FrameRateLimiter, Verdict
from app.services.runtime import Runtime
from app.services.tracing import ConnectionSpan

log = logging.getLogger(__name__)
router = APIRouter()

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
_CLOSE_CODES = {
    ErrorCode.INVALID_REQUEST: CloseCode.INVALID_REQUEST,
    ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    ErrorCode.FORBIDDEN: CloseCode.FORBIDDEN,
    ErrorCode.SESSION_NOT_FOUND: CloseCode.NOT_FOUND,
    ErrorCode.SESSION_BUSY: CloseCode.BUSY,
    # Only a draining server refuses a connection with `internal_error` (retryable): the
    # request was fine, so "going away" (come back later), as its open sockets get too.
    ErrorCode.INTERNAL_ERROR: CloseCode.GOING_AWAY,
    # The auth server is down: the token may be fine, so not 4401 but "try again later".
    ErrorCode.AUTH_UNAVAILABLE: CloseCode.TRY_AGAIN_LATER,
    # The store does not answer: the same.
    ErrorCode.STORE_UNAVAILABLE: CloseCode.TRY_AGAIN_LATER,
    # Too many new connections from one address (CONNECTIONS_PER_MINUTE_PER_IP).
    ErrorCode.RATE_LIMITED: CloseCode.POLICY_VIOLATION,
}


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
    """The `after_seq` query parameter: ASCII digits within the 64-bit seq range."""
    if raw is None:
        return 0
    if not raw.isascii() or not raw.isdigit():
        raise Refusal(ErrorCode.INVALID_REQUEST, "after_seq must be a non-negative integer")
    # Length first: int() refuses more than 4,300 digits, and anything past 19 is out of range.
    significant = raw.lstrip("0") or "0"
    if len(significant) > len(str(MAX_SEQ)) or int(significant) > MAX_SEQ:
        raise Refusal(ErrorCode.INVALID_REQUEST, f"after_seq must be at most {MAX_SEQ}")
    return int(significant)


def check_connection_rate(websocket: WebSocket, runtime: Runtime) -> None:
    """Refuse a client address past CONNECTIONS_PER_MINUTE_PER_IP new connections a minute."""
    limiter = runtime.connection_limiter
    if limiter is None:
        return
    client = websocket.client
    address = client_address(
        client.host if client is not None else None,
        websocket.headers.get("x-forwarded-for"),
        runtime.trusted_proxies,
    )
    if not limiter.allow(address):
        runtime.metrics.connection_refusals.inc()
        raise Refusal(
            ErrorCode.RATE_LIMITED,
            "too many new connections from this address; wait a minute",
            retryable=True,
        )


async def authorize(websocket: WebSocket, runtime: Runtime) -> str | None:
    # Host first: a rebound attacker's page passes the Origin check as "same origin".
    refused_host = host_refusal(websocket.headers.get("host"), runtime.settings.allowed_hosts)
    if refused_host is not None:
        raise Refusal(ErrorCode.FORBIDDEN, refused_host)
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
    except AuthUnavailable as e:
        raise Refusal(ErrorCode.AUTH_UNAVAILABLE, str(e), retryable=True) from e


def _verified_token(websocket: WebSocket, owner: str | None) -> str | None:
    """The bearer token `authorize` accepted (None when auth is off): MCP servers whose config
    asks for it get it with each call, no one else."""
    if owner is None:
        return None
    return bearer_token(websocket.headers.get("authorization"), websocket.query_params.get("token"))


def close_code_of(refusal: Refusal) -> int:
    """The close code that names the refusal's reason; a retryable `session_busy` (the previous
    connection is still finishing) closes with 1013 (try again later), which clients reconnect
    after, not 4409, which tells them to stop."""
    if refusal.retryable and refusal.code is ErrorCode.SESSION_BUSY:
        return CloseCode.TRY_AGAIN_LATER
    return _CLOSE_CODES.get(refusal.code, CloseCode.INVALID_REQUEST)


async def refuse(websocket: WebSocket, refusal: Refusal) -> None:
    frame = ErrorFrame(code=refusal.code, message=refusal.message, retryable=refusal.retryable)
    sink = WebSocketSink(websocket)
    with contextlib.suppress(ClientDropped):
        await sink.send(frame)
        await sink.close(close_code_of(refusal), refusal.message)


@router.websocket("/ws")
async def chat_socket(websocket: WebSocket) -> None:
    """One client connection to one session (new or resumed), traced as one span."""
    runtime: Runtime = websocket.app.state.runtime
    with runtime.tracing.connection(websocket.headers) as span:
        await _connection(websocket, runtime, span)


async def _connection(websocket: WebSocket, runtime: Runtime, span: ConnectionSpan) -> None:
    await websocket.accept()
    sink = WebSocketSink(websocket, send_timeout_s=runtime.settings.ws_send_timeout_s)
    try:
        check_connection_rate(websocket, runtime)
        owner = await authorize(websocket, runtime)
        after_seq = parse_after_seq(websocket.query_params.get("after_seq"))
        session_id = websocket.query_params.get("session_id") or None
        conversation, ready = await runtime.hub.connect(
            session_id,
            after_seq=after_seq,
            owner=owner,
            sink=sink,
            credentials=_verified_token(websocket, owner),
        )
    except ConnectRefused as e:
        span.refused(e.code.value)
        await refuse(websocket, Refusal(e.code, e.message, retryable=e.retryable))
        return
    except Refusal as e:
        span.refused(e.code.value)
        await refuse(websocket, e)
        return
    # No await from `connect` to the send of `ready`: a joined response's frames, sent from
    # now on, must queue behind it (docs/architecture.md, "Resume").
    span.attached(session_id=ready.session_id, owner=owner, resumed=ready.resumed)
    runtime.metrics.open_connections.inc()
    # Logs of this connection and of the tasks it starts carry the session id.
    session_id_var.set(ready.session_id)
    try:
        await sink.send(ready)
        runtime.hub.opened(conversation)
        await _serve(websocket, sink, conversation, runtime)
    except ClientDropped:
        pass  # its own send timed out: the connection ends like a disconnect
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


# Frames read but not handled yet; a client this far ahead of its replies is flooding.
INBOX_MAX = 256
_BINARY_REFUSAL = "binary frames are not accepted"


@dataclass(frozen=True, slots=True)
class _Inbound:
    """A frame read from the socket: its text, or a refusal to answer in its place, or the
    close it calls for (after the frames before it are answered)."""

    text: str | None
    refusal: tuple[ErrorCode, str, bool] | None = None
    close: tuple[int, str] | None = None


class _Inbox:
    """The frames read but not handled yet, and the worker that handles them one at a time.

    Both are made at the first frame: a connection that never sends one (most open ones, at any
    moment) holds neither, which is about 4 KiB less per idle connection (docs/performance.md).
    """

    def __init__(self, conversation: Connection, sink: WebSocketSink) -> None:
        self._conversation = conversation
        self._sink = sink
        self._frames: asyncio.Queue[_Inbound] | None = None
        self._worker: asyncio.Task[None] | None = None

    def waiting(self) -> int:
        """How many frames wait to be handled."""
        return 0 if self._frames is None else self._frames.qsize()

    def put(self, inbound: _Inbound) -> None:
        if self._frames is None:
            self._frames = asyncio.Queue(maxsize=INBOX_MAX + 1)
            work = _work(self._frames, self._conversation, self._sink)
            self._worker = asyncio.create_task(work, name="ws-worker")
        self._frames.put_nowait(inbound)

    async def handled(self) -> None:
        """Wait until the worker has ended (after a frame that calls for the close)."""
        if self._worker is not None:
            await asyncio.wait([self._worker])

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.wait([self._worker])


async def _serve(
    websocket: WebSocket, sink: WebSocketSink, conversation: Connection, runtime: Runtime
) -> None:
    """Read frames until the client leaves or must be closed.

    Reading never waits on the store: frames go to the connection's worker, which handles them
    one at a time in order (so each frame's reply comes in the order the frames came), while
    this loop goes on reading, and sees the client's close at once.
    """
    inbox = _Inbox(conversation, sink)
    try:
        closing = await _read(websocket, inbox, runtime)
        if closing is not None:
            # Every frame before the offending one is answered first, then the socket closes.
            inbox.put(closing)
            await inbox.handled()
    finally:
        # A message being stored goes on in its own task; frames not handled yet are dropped
        # (never acknowledged: the client sends them again after resuming).
        await inbox.stop()


async def _read(websocket: WebSocket, inbox: _Inbox, runtime: Runtime) -> _Inbound | None:
    """Read into the inbox until the client leaves (None) or a frame calls for a close."""
    limiter = FrameRateLimiter(per_minute=runtime.settings.max_messages_per_minute)
    max_bytes = runtime.settings.ws_max_bytes
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text, data = message.get("text"), message.get("bytes")
        # The size limit holds for every frame, binary ones included.
        if (text is not None and _too_large(text, max_bytes)) or len(data or b"") > max_bytes:
            return _Inbound(None, close=(CloseCode.TOO_LARGE, "frame too large"))
        if text is None:
            # Answered before the limiter, not counted (docs/protocol.md, "Rate limit").
            inbound = _Inbound(None, (ErrorCode.INVALID_EVENT, _BINARY_REFUSAL, False))
        else:
            verdict = limiter.check()
            if verdict is Verdict.DISCONNECT:
                return _Inbound(None, close=(CloseCode.POLICY_VIOLATION, "too many messages"))
            refused = (ErrorCode.RATE_LIMITED, "too many messages; slow down", True)
            inbound = _Inbound(text, refused if verdict is Verdict.REFUSE else None)
        if inbox.waiting() >= INBOX_MAX:
            return _Inbound(None, close=(CloseCode.POLICY_VIOLATION, "too many frames unanswered"))
        inbox.put(inbound)


async def _work(
    inbox: asyncio.Queue[_Inbound], conversation: Connection, sink: WebSocketSink
) -> None:
    """Handle the connection's frames in order."""
    while True:
        inbound = await inbox.get()
        if inbound.close is not None:
            await sink.close(*inbound.close)
            return
        if inbound.refusal is not None:
            code, message, retryable = inbound.refusal
            await conversation.send_error(code, message, retryable=retryable)
        elif inbound.text is not None:
            await _dispatch(inbound.text, conversation)


def _too_large(text: str, max_bytes: int) -> bool:
    # Characters are 1 to 4 bytes: only encode when the length alone does not decide.
    if len(text) > max_bytes:
        return True
    return len(text) * 4 > max_bytes and len(text.encode()) > max_bytes


async def _dispatch(text: str, conversation: Connection) -> None:
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
