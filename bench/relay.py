"""The raw relay: the least a Python server on this stack can do to forward a model stream.

A bare ASGI WebSocket endpoint (no framework, nothing stored): on connect it sends
``session.ready``; on each ``user.message`` it posts to the upstream with httpx, reads the SSE
lines, and sends each content delta as one ``response.delta`` frame (orjson), then
``response.done``. It speaks the same frames as our server, so one load client drives both, and
its cost is the baseline our server is measured against. With ``coalesce_ms`` it sends the
first delta at once and then at most one frame per window; a simplification (a window is only
closed by the next chunk, not by a timer) that is enough to measure what coalescing saves.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CHAT_PATH = "/openai/v1/chat/completions"


class RawRelay:
    """An ASGI app: `/ws` relays the upstream at `upstream_url`; everything else is 404."""

    def __init__(self, upstream_url: str, *, coalesce_ms: float = 0.0) -> None:
        self._upstream_url = upstream_url.rstrip("/") + _CHAT_PATH
        self._client: httpx.AsyncClient | None = None
        self._coalesce_s = coalesce_ms / 1000

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._socket(receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                limits = httpx.Limits(max_connections=None, max_keepalive_connections=2000)
                self._client = httpx.AsyncClient(timeout=30.0, limits=limits)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _socket(self, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        ready = {"type": "session.ready", "session_id": str(uuid.uuid4()), "resumed": False}
        await _send_frame(send, {**ready, "events": [], "model": "raw-relay"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = orjson.loads(message.get("text") or "{}")
            if frame.get("type") == "user.message":
                await self._relay(frame.get("text", ""), send)

    async def _relay(self, text: str, send: Send) -> None:
        assert self._client is not None
        response_id = str(uuid.uuid4())
        await _send_frame(send, {"type": "response.started", "response_id": response_id})
        body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": text}]}
        parts: list[str] = []
        pending: list[str] = []
        flushed_at = 0.0  # the first token goes out at once
        async with self._client.stream("POST", self._upstream_url, json=body) as upstream:
            async for line in upstream.aiter_lines():
                content = _content(line)
                if not content:
                    continue
                parts.append(content)
                pending.append(content)
                now = time.monotonic()
                if now - flushed_at >= self._coalesce_s:
                    await _send_delta(send, response_id, pending)
                    pending, flushed_at = [], now
        if pending:
            await _send_delta(send, response_id, pending)
        done = {"type": "response.done", "response_id": response_id, "seq": 0}
        await _send_frame(send, {**done, "status": "completed", "text": "".join(parts)})


def _content(line: str) -> str | None:
    """The text of one SSE `data:` line, if it carries any."""
    if not line.startswith("data: {"):
        return None
    choices = orjson.loads(line[6:]).get("choices") or [{}]
    content: str | None = choices[0].get("delta", {}).get("content")
    return content


async def _send_delta(send: Send, response_id: str, texts: list[str]) -> None:
    delta = {"type": "response.delta", "response_id": response_id}
    await _send_frame(send, {**delta, "text": "".join(texts)})


async def _send_frame(send: Send, frame: dict[str, Any]) -> None:
    await send({"type": "websocket.send", "text": orjson.dumps(frame).decode()})
