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
from tests.support.server import RunningServer

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
    if len(payload) < 126:
        length = bytes([0x80 | len(payload)])
    elif len(payload) < 2**16:
        length = bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        length = bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    sock.sendall(bytes([0x81]) + length + mask + masked)


def _slow_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer: it stops reading when the test does."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    _handshake(sock, port)
    return sock


def _send_until_refused(sock: socket.socket, text: str, times: int) -> None:
    sock.settimeout(2)
    try:
        for _ in range(times):
            _send_text(sock, text)
    except OSError:
        return  # the server stopped reading: it dropped this client


def _read_until_done(sock: socket.socket) -> None:
    while orjson.loads(_read_frame(sock))["type"] != "response.done":
        pass


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


async def _assert_free_again(server: RunningServer, session_id: str) -> None:
    """The dropped client's session is not live: it resumes, and it can be deleted."""
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        await wait_for_session(http, session_id, lambda s: s["status"] == "idle", timeout=20)
    async with server.connect(f"session_id={session_id}", max_size=None) as resumed:
        assert (await resumed.ready())["session_id"] == session_id
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.delete(f"/api/sessions/{session_id}")).status_code == 204


async def test_a_client_dropped_while_its_own_replies_pile_up_leaves_its_session_free(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(ws_send_timeout_s=0.5, max_message_chars=200_000)
    fake_groq.answer_model("test-model", text_reply("ok"))
    big = orjson.dumps({"type": "user.message", "text": "x" * 150_000, "id": "big"}).decode()
    sock = await asyncio.to_thread(_slow_socket, server.port)
    try:
        ready = orjson.loads(await asyncio.to_thread(_read_frame, sock))
        await asyncio.to_thread(_send_text, sock, big)
        await asyncio.to_thread(_read_until_done, sock)
        # From here on the client reads nothing, and asks for 150 KB acknowledgements again,
        # until the server, having dropped it, stops reading too.
        await asyncio.to_thread(_send_until_refused, sock, big, 60)
        await _assert_free_again(server, ready["session_id"])
    finally:
        sock.close()


async def test_a_client_dropped_during_an_answer_leaves_its_session_free(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(ws_send_timeout_s=0.5)
    fake_groq.script(text_reply(*[TOKEN] * TOKENS))
    sock = await asyncio.to_thread(_slow_socket, server.port)
    try:
        ready = orjson.loads(await asyncio.to_thread(_read_frame, sock))
        await asyncio.to_thread(_send_text, sock, '{"type":"user.message","text":"go"}')
        # It still pings (its pongs pile up behind the answer), but reads nothing.
        for _ in range(3):
            await asyncio.to_thread(_send_text, sock, '{"type":"ping"}')
        await _assert_free_again(server, ready["session_id"])
    finally:
        sock.close()
