"""The load client's three kinds of connection: a WebSocket session, a direct upstream reader,
and a stalled client that stops reading."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.schedule import Schedule, now_us, parse_token

_FRAME_TIMEOUT_S = 30.0


@dataclass(slots=True)
class StreamResult:
    """What one session saw: when it was due, each token's (index, sent, received) times."""

    due_us: int
    first_us: int = 0
    tokens: list[tuple[int, int, int]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    done_text: str | None = None
    error: str | None = None


async def open_session(url: str) -> ClientConnection:
    """A WebSocket connection that has received its `session.ready`."""
    connection = await connect(url, open_timeout=30, ping_interval=None, max_size=None)
    ready = orjson.loads(await asyncio.wait_for(connection.recv(), _FRAME_TIMEOUT_S))
    if ready.get("type") != "session.ready":
        await connection.close()
        raise RuntimeError(f"expected session.ready, got {ready.get('type')}")
    return connection


async def _sleep_until_us(due_us: int) -> None:
    delay = (due_us - now_us()) / 1e6
    if delay > 0:
        await asyncio.sleep(delay)


async def run_session(
    connection: ClientConnection, schedule: Schedule, due_us: int
) -> StreamResult:
    """At `due_us`, send one user message; read until `response.done`."""
    result = StreamResult(due_us=due_us)
    await _sleep_until_us(due_us)
    message = {"type": "user.message", "text": schedule.message()}
    await connection.send(orjson.dumps(message).decode())
    try:
        while result.done_text is None:
            raw = await asyncio.wait_for(connection.recv(), _FRAME_TIMEOUT_S)
            _take_frame(result, orjson.loads(raw), now_us())
    except Exception as e:  # a benchmark records every failure instead of stopping
        result.error = f"{type(e).__name__}: {e}"
    return result


def _take_frame(result: StreamResult, frame: dict[str, object], received_us: int) -> None:
    kind = frame.get("type")
    if kind == "response.delta":
        text = str(frame["text"])
        result.first_us = result.first_us or received_us
        result.text.append(text)
        result.tokens.extend((index, sent, received_us) for index, sent in parse_token(text))
    elif kind == "response.done":
        result.done_text = str(frame.get("text", ""))
        if frame.get("status") != "completed":
            result.error = f"response {frame.get('status')}: {frame.get('error')}"
    elif kind == "error":
        result.error = f"error frame: {frame.get('code')}"


async def run_direct(upstream_url: str, schedule: Schedule, due_us: int) -> StreamResult:
    """The same stream read straight from the upstream (the baseline every delay is added to)."""
    result = StreamResult(due_us=due_us)
    parts = urlsplit(upstream_url)
    await _sleep_until_us(due_us)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    messages = [{"role": "user", "content": schedule.message()}]
    body = orjson.dumps({"stream": True, "messages": messages})
    writer.write(
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: upstream\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )
    try:
        await _read_sse(reader, result)
    finally:
        writer.close()
    return result


async def _read_sse(reader: asyncio.StreamReader, result: StreamResult) -> None:
    while True:
        line = await asyncio.wait_for(reader.readline(), _FRAME_TIMEOUT_S)
        if not line or line.startswith(b"data: [DONE]"):
            result.done_text = "".join(result.text)
            return
        if line.startswith(b"data: {"):
            choices = orjson.loads(line[6:]).get("choices") or [{}]
            content = choices[0].get("delta", {}).get("content")
            if content:
                _take_frame(result, {"type": "response.delta", "text": content}, now_us())


class StalledClient:
    """A WebSocket client that sends one message asking for a long, fast stream, then never
    reads again (a tiny receive buffer, so the server feels it at once)."""

    def __init__(self, url: str) -> None:
        self._url = urlsplit(url)
        self._sock: socket.socket | None = None

    async def start(self, schedule: Schedule) -> None:
        """Handshake, read the handshake answer, send the message, stop reading."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (self._url.hostname, self._url.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self._url.path} HTTP/1.1\r\nHost: {self._url.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        answer = await loop.sock_recv(sock, 4096)
        if not answer.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"stalled client refused: {answer[:80]!r}")
        message = orjson.dumps({"type": "user.message", "text": schedule.message()})
        await loop.sock_sendall(sock, _masked_text_frame(message))
        self._sock = sock

    def stop(self) -> None:
        """Drop the connection."""
        if self._sock is not None:
            self._sock.close()


def _masked_text_frame(payload: bytes) -> bytes:
    """One final text frame, masked as a client must (RFC 6455)."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    if len(payload) < 126:
        head = struct.pack("!BB", 0x81, 0x80 | len(payload))
    else:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return head + mask + masked
