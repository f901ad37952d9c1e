"""The Vercel AI SDK's HTTP chat transport (`DefaultChatTransport`): `POST /api/chat` answers
with the UI message stream over SSE; load, resume and stop a chat (docs/ai-sdk.md)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send

from app.protocol import ErrorCode
from app.routers.deps import OwnerDep, RuntimeDep, bearer_token
from app.services.ai_sdk import CHAT_ID_PATTERN, ChatRefused, ChatTurns, Turn
from app.services.ai_sdk.requests import BadChatRequest, ChatBody, chat_request
from app.services.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/chat", tags=["ai-sdk"])

# A comment line after this long without a chunk keeps proxies from closing a quiet stream.
KEEP_ALIVE_S = 15.0
# The `ai` package's UI_MESSAGE_STREAM_HEADERS: the header tells it this is protocol v1.
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-vercel-ai-ui-message-stream", b"v1"),
    (b"x-accel-buffering", b"no"),
]
ChatIdPath = Annotated[str, Path(pattern=CHAT_ID_PATTERN)]

HTTP_STATUS = {
    ErrorCode.INVALID_EVENT: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.SESSION_BUSY: 409,
    ErrorCode.RESPONSE_IN_PROGRESS: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.USAGE_LIMIT_EXCEEDED: 429,
}


_MEANING = {
    400: "not a turn this server can take (no user message, no text, a regenerate of an "
    "answer that is not the last)",
    409: "an answer of this chat is running, or the chat is open on /ws",
    413: "the message is longer than MAX_MESSAGE_CHARS",
    429: "an owner's usage limit (tokens a day, live or new sessions), with resets_at",
    503: "the store or the auth server does not answer; retry",
}


class ChatError(BaseModel):
    """A turn refused before anything streamed."""

    detail: str
    # The error code (absent when the body is not JSON at all: FastAPI's own 400).
    code: str | None = None
    resets_at: str | None = None


def chat_turns(runtime: Runtime) -> ChatTurns:
    return ChatTurns(runtime.hub, runtime.store, model=runtime.provider.model)


def refusal_response(refused: ChatRefused) -> JSONResponse:
    """A turn refused before anything streamed: an HTTP error `useChat` shows as its error."""
    status = HTTP_STATUS.get(refused.code, 503)
    headers = {}
    if status == 503:
        headers["Retry-After"] = "2"
    content: dict[str, Any] = {"detail": refused.message, "code": refused.code.value}
    if refused.resets_at is not None:
        content["resets_at"] = refused.resets_at.isoformat()
    return JSONResponse(content, status_code=status, headers=headers)


def _credentials(request: Request, owner: str | None) -> str | None:
    if owner is None:
        return None
    return bearer_token(request.headers.get("authorization"), request.query_params.get("token"))


def _refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an operation declares: `{"detail": ..., "code": ...}`."""
    return {status: {"model": ChatError, "description": _MEANING[status]} for status in statuses}


@router.post(
    "",
    response_class=Response,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the UI message stream"},
        **_refusals(400, 409, 413, 429, 503),
    },
)
async def post_chat(
    request: Request, runtime: RuntimeDep, owner: OwnerDep, body: Annotated[ChatBody, Body()]
) -> Response:
    """A `useChat` turn: the new user message (or a regenerate), answered as a UI message
    stream. Only the last message of `messages` is read."""
    try:
        turn = await chat_turns(runtime).submit(
            chat_request(body), owner=owner, credentials=_credentials(request, owner)
        )
    except BadChatRequest as e:
        return refusal_response(ChatRefused(ErrorCode.INVALID_REQUEST, str(e)))
    except ChatRefused as e:
        return refusal_response(e)
    return UIMessageStreamResponse(turn, send_timeout_s=runtime.settings.ws_send_timeout_s)


@router.get("/{chat_id}/messages")
async def get_messages(
    chat_id: ChatIdPath, runtime: RuntimeDep, owner: OwnerDep
) -> list[dict[str, Any]]:
    """The stored chat as UIMessages for `useChat({messages})`; `[]` for a new chat."""
    return await chat_turns(runtime).messages(chat_id, owner=owner)


@router.get(
    "/{chat_id}/stream",
    response_class=Response,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the running answer"},
        204: {"description": "no answer is running"},
        **_refusals(409, 503),
    },
)
async def resume_stream(
    chat_id: ChatIdPath, request: Request, runtime: RuntimeDep, owner: OwnerDep
) -> Response:
    """`useChat({resume: true})`: the running answer from its start, then live; 204 if none."""
    try:
        turn = await chat_turns(runtime).resume(
            chat_id, owner=owner, credentials=_credentials(request, owner)
        )
    except ChatRefused as e:
        return refusal_response(e)
    if turn is None:
        return Response(status_code=204)
    return UIMessageStreamResponse(turn, send_timeout_s=runtime.settings.ws_send_timeout_s)


@router.post("/{chat_id}/stop")
async def stop_chat(chat_id: ChatIdPath, runtime: RuntimeDep, owner: OwnerDep) -> dict[str, bool]:
    """Cancel the chat's running answer (a client's abort alone only disconnects it)."""
    return {"stopped": await chat_turns(runtime).stop(chat_id, owner=owner)}


class ReaderStalled(Exception):
    """The client stopped reading: a write waited longer than `WS_SEND_TIMEOUT_S`."""


class UIMessageStreamResponse(Response):
    """The turn's chunks as SSE, `data: [DONE]` last. The client's leaving is noticed at once
    (not at the next write), so a resume right after a reload finds the answer joinable; a
    client that stops reading is dropped after `send_timeout_s` (the answer goes on, stored,
    and the session is free for its next turn), as on the WebSocket."""

    def __init__(self, turn: Turn, *, send_timeout_s: float) -> None:
        super().__init__(status_code=200)
        self._turn = turn
        self._send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.ensure_future(self._stream(send))
        leaving = asyncio.ensure_future(_client_left(receive))
        try:
            await asyncio.wait([streaming, leaving], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, leaving):
                task.cancel()
            await asyncio.wait([streaming, leaving])
            self._turn.close()
        error = None if streaming.cancelled() else streaming.exception()
        if isinstance(error, ReaderStalled):
            log.warning("dropped an AI SDK reader that stopped reading")
        elif error is not None and not isinstance(error, OSError):  # OSError: the client left
            raise error

    async def _stream(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS}
        await self._send(send, start)
        async for chunk in self._turn.chunks(idle_s=KEEP_ALIVE_S):
            data = (
                b": keep-alive\n\n" if chunk is None else b"data: " + orjson.dumps(chunk) + b"\n\n"
            )
            await self._send(send, {"type": "http.response.body", "body": data, "more_body": True})
        done = {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False}
        await self._send(send, done)

    async def _send(self, send: Send, message: Message) -> None:
        try:
            async with asyncio.timeout(self._send_timeout_s):
                await send(message)
        except TimeoutError as e:
            raise ReaderStalled from e


async def _client_left(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
