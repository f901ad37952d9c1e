"""A client that stops reading is dropped after WS_SEND_TIMEOUT_S; its response is not held."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import httpx
import orjson

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.rest import wait_for_session

TOKEN = "x" * 4000
TOKENS = 1500  # 6 MB: far more than the socket buffers between us hold


def _handshake(sock: socket.socket, port: int) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head


def _read_frame(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            data += sock.recv(n - len(data))
        return data

    _, length = exactly(2)
    if length == 126:
        length = struct.unpack("!H", exactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", exactly(8))[0]
    return exactly(length)


def _send_text(sock: socket.socket, text: str) -> None:
    payload, mask = text.encode(), os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    assert len(payload) < 126
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


async def test_a_client_that_stops_reading_is_dropped_and_its_answer_stored(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(ws_send_timeout_s=0.5)
    fake_groq.script(text_reply(*[TOKEN] * TOKENS))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    try:
        await asyncio.to_thread(sock.connect, ("127.0.0.1", server.port))
        await asyncio.to_thread(_handshake, sock, server.port)
        ready = orjson.loads(await asyncio.to_thread(_read_frame, sock))
        await asyncio.to_thread(_send_text, sock, '{"type":"user.message","text":"go"}')
        # From here on the client reads nothing.
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            session = await wait_for_session(
                http,
                ready["session_id"],
                lambda s: s["event_count"] == 2 and s["status"] == "idle",
                timeout=20,
            )
            events = (await http.get(f"/api/sessions/{ready['session_id']}/events")).json()
    finally:
        sock.close()
    answer = events["events"][1]
    assert session["status"] == "idle"
    assert answer["status"] == "completed"
    assert len(answer["text"]) == len(TOKEN) * TOKENS
