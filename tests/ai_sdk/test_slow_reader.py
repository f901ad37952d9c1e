"""A `POST /api/chat` client that stops reading is dropped after WS_SEND_TIMEOUT_S, as on the
WebSocket: its answer is stored, and the chat is free for its next turn."""

from __future__ import annotations

import asyncio
import socket

import httpx
import orjson

from app.services.ai_sdk.chat_ids import derived_session_id
from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.ui_stream import chat_body, read_ui_stream, user_message
from tests.support.waiting import wait_until

TOKEN = "x" * 4000
TOKENS = 1500  # 6 MB: far more than the socket buffers between us hold


def _post_and_never_read(port: int, body: bytes) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    head = (
        f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


async def test_a_reader_that_stops_reading_is_dropped_and_its_chat_freed(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(ws_send_timeout_s=0.5)
    fake_groq.script(text_reply(*[TOKEN] * TOKENS), text_reply("the next turn"))
    body = orjson.dumps(chat_body("stalled", user_message("go", "m1")))
    sock = await asyncio.to_thread(_post_and_never_read, server.port, body)
    hub = server.app.state.runtime.hub
    session_id = derived_session_id("stalled", None)
    try:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:

            async def answered_and_free() -> bool:
                if hub.is_live(session_id):
                    return False
                stored = await http.get(f"/api/sessions/{session_id}/events")
                return stored.status_code == 200 and len(stored.json()["events"]) == 2

            # The socket stays open and unread: only the send deadline can free the session.
            await wait_until(answered_and_free, 30, what="the stalled reader to be dropped")
            next_body = chat_body("stalled", user_message("again", "m2"))
            async with http.stream("POST", "/api/chat", json=next_body) as response:
                stream = await read_ui_stream(response)
            events = (await http.get(f"/api/sessions/{session_id}/events")).json()["events"]
    finally:
        sock.close()
    assert stream.text() == "the next turn"
    first_answer = events[1]
    assert first_answer["status"] == "completed"
    assert len(first_answer["text"]) == len(TOKEN) * TOKENS
