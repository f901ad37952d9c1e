"""`/api/chat/ws`, the server side of the `ai` package's `WebSocketChatTransport`, against a real
server: correlated requests on one socket, chunk sequences, resume, abort, validation, auth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.services.ai_sdk.chat_ids import derived_session_id
from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, Gate, gated_reply, text_reply, tool_call_reply
from tests.support.rest import get_events
from tests.support.server import RunningServer
from tests.support.ui_stream import UIStream, assert_well_formed, parse_event, user_message
from tests.support.waiting import wait_until

Frame = dict[str, Any]
RECV_TIMEOUT_S = 5.0


@asynccontextmanager
async def transport(
    server: RunningServer, query: str = "", **options: Any
) -> AsyncIterator[ClientConnection]:
    url = f"ws://127.0.0.1:{server.port}/api/chat/ws" + (f"?{query}" if query else "")
    async with connect(url, open_timeout=5, close_timeout=2, **options) as socket:
        yield socket


def send_frame(request_id: str, chat_id: str, text: str, message_id: str) -> Frame:
    return {
        "type": "send",
        "requestId": request_id,
        "id": chat_id,
        "trigger": "submit-message",
        "messages": [user_message(text, message_id)],
        "headers": {},
        "body": {},
    }


def resume_frame(request_id: str, chat_id: str, **extra: Any) -> Frame:
    return {"type": "resume", "requestId": request_id, "id": chat_id, "headers": {}, "body": {}}


class Replies:
    """The server's frames by `requestId`, each request's chunks checked and parsed as a
    UI message stream (sequences from 0, no gaps, `end` last)."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self.frames: dict[str, list[Frame]] = {}
        self.streams: dict[str, UIStream] = {}

    async def until(self, request_id: str, frame_type: str) -> list[Frame]:
        async with asyncio.timeout(RECV_TIMEOUT_S):
            while not any(f["type"] == frame_type for f in self.frames.get(request_id, [])):
                self._note(orjson.loads(await self._socket.recv()))
        return self.frames[request_id]

    async def until_chunk(self, request_id: str, chunk_type: str) -> UIStream:
        """Read until the request's stream has a chunk of `chunk_type`."""
        async with asyncio.timeout(RECV_TIMEOUT_S):
            while chunk_type not in self.streams.get(request_id, UIStream()).types():
                self._note(orjson.loads(await self._socket.recv()))
        return self.streams[request_id]

    def _note(self, frame: Frame) -> None:
        frames = self.frames.setdefault(frame["requestId"], [])
        if frame["type"] == "chunk":
            chunks = [f for f in frames if f["type"] == "chunk"]
            assert frame["sequence"] == len(chunks), f"sequence gap: {frame}"
            stream = self.streams.setdefault(frame["requestId"], UIStream())
            parse_event(orjson.dumps(frame["chunk"]).decode(), stream)
        frames.append(frame)

    def stream(self, request_id: str) -> UIStream:
        stream = self.streams[request_id]
        stream.done_marker = self.frames[request_id][-1]["type"] == "end"
        return stream


async def test_a_send_streams_sequenced_chunks_then_end_and_stores_the_turn(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"})), text_reply("Found Ada.")
    )
    async with transport(server) as socket:
        replies = Replies(socket)
        await socket.send(orjson.dumps(send_frame("r1", "wsChat", "profile 123?", "m1")).decode())
        await replies.until("r1", "end")

    stream = replies.stream("r1")
    assert_well_formed(stream)
    assert "tool-output-available" in stream.types()
    assert stream.text() == "Found Ada."
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        messages = (await http.get("/api/chat/wsChat/messages")).json()
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["id"] == stream.first("start")["messageId"]


async def test_several_requests_share_one_socket(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("one"), text_reply("two"))
    async with transport(server) as socket:
        replies = Replies(socket)
        await socket.send(orjson.dumps(send_frame("a", "wsFirst", "hi", "m1")).decode())
        await replies.until("a", "end")
        await socket.send(orjson.dumps(send_frame("b", "wsSecond", "hi", "m1")).decode())
        await replies.until("b", "end")
    assert replies.stream("a").text() == "one"
    assert replies.stream("b").text() == "two"


async def test_resume_answers_no_active_or_replays_the_answer_from_sequence_zero(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply("so ", "far ", after=["and the end"], gate=gate))
    async with transport(server) as socket:
        replies = Replies(socket)
        await socket.send(orjson.dumps(resume_frame("idle", "wsResume")).decode())
        assert [f["type"] for f in await replies.until("idle", "no-active")] == ["no-active"]
        await socket.send(orjson.dumps(send_frame("s", "wsResume", "hi", "m1")).decode())
        await replies.until_chunk("s", "text-delta")
    hub = server.app.state.runtime.hub
    session_id = derived_session_id("wsResume", None)
    await wait_until(lambda: _not_live(hub, session_id), what="the server to see it leave")

    async with transport(server) as socket:
        replies_after = Replies(socket)
        await socket.send(orjson.dumps(resume_frame("again", "wsResume")).decode())
        await replies_after.until("again", "start")
        await replies_after.until_chunk("again", "text-delta")
        gate.open()
        await replies_after.until("again", "end")

    replay = replies_after.stream("again")
    assert_well_formed(replay)
    assert replay.first("start")["messageId"] == replies.stream("s").first("start")["messageId"]
    assert replay.text() == "so far and the end"


async def test_abort_stops_the_answer_it_follows(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply("partial ", after=["never"], gate=gate))
    async with transport(server) as socket:
        replies = Replies(socket)
        await socket.send(orjson.dumps(send_frame("s", "wsAbort", "hi", "m1")).decode())
        await replies.until_chunk("s", "text-delta")
        await socket.send(orjson.dumps({"type": "abort", "requestId": "s"}).decode())
        await replies.until("s", "end")
    assert replies.stream("s").types()[-1] == "abort"
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        session_id = derived_session_id("wsAbort", None)

        async def cancelled() -> bool:
            events = await get_events(http, session_id)
            return bool(events) and events[-1].get("status") == "cancelled"

        await wait_until(cancelled, what="the cancelled answer to be stored")


async def test_a_refused_turn_is_an_error_of_its_request_and_the_socket_stays(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("fine"))
    async with transport(server) as socket:
        replies = Replies(socket)
        bad = send_frame("bad", "wsRefuse", "hi", "m1")
        bad["messages"] = [{"id": "a1", "role": "assistant", "parts": []}]
        await socket.send(orjson.dumps(bad).decode())
        error = (await replies.until("bad", "error"))[-1]
        assert "user message" in error["errorText"]
        await socket.send(orjson.dumps(send_frame("good", "wsRefuse", "hi", "m1")).decode())
        await replies.until("good", "end")
    assert replies.stream("good").text() == "fine"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"type": "send"}',
        b'{"type": "dance", "requestId": "x"}',
        b'{"type": "resume", "requestId": "x", "id": "has space", "headers": {}, "body": {}}',
    ],
)
async def test_a_frame_outside_the_protocol_closes_the_socket_with_1008(
    server: RunningServer, raw: bytes
) -> None:
    async with transport(server) as socket:
        await socket.send(raw.decode())
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(RECV_TIMEOUT_S):
                await socket.recv()
        assert socket.close_code == 1008


async def test_origin_and_auth_rules_are_those_of_the_websocket(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(auth_mode="api_key", api_keys="the-key")
    async with transport(server) as socket:
        # The transport sends its request as soon as the socket opens: it gets the reason.
        await socket.send(orjson.dumps(send_frame("first", "wsAuth", "hi", "m0")).decode())
        error = orjson.loads(await socket.recv())
        assert error == {"type": "error", "requestId": "first", "errorText": "a token is required"}
        with pytest.raises(ConnectionClosed):
            await socket.recv()
        assert socket.close_code == 4401
    async with transport(server, "token=the-key", origin="https://evil.example") as socket:
        with pytest.raises(ConnectionClosed):
            await socket.recv()
        assert socket.close_code == 4403
    fake_groq.script(text_reply("authorized"))
    async with transport(server, "token=the-key") as socket:
        replies = Replies(socket)
        await socket.send(orjson.dumps(send_frame("r", "wsAuth", "hi", "m1")).decode())
        await replies.until("r", "end")
    assert replies.stream("r").text() == "authorized"


async def _not_live(hub: Any, session_id: str) -> bool:
    return not hub.is_live(session_id)
