"""A WebSocket test client that speaks the protocol's JSON frames."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]
RECV_TIMEOUT_S = 5.0


class WsClient:
    """Sends and receives protocol frames; every wait is bounded."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: list[Frame] = []
        # The session this client was given (set by the test that reads `session.ready`).
        self.session_id = ""

    async def send(self, frame: Frame) -> None:
        await self.connection.send(orjson.dumps(frame).decode())

    async def send_raw(self, data: str | bytes) -> None:
        await self.connection.send(data)

    async def recv(self, timeout: float = RECV_TIMEOUT_S) -> Frame:
        raw = await asyncio.wait_for(self.connection.recv(), timeout)
        frame: Frame = orjson.loads(raw)
        self.received.append(frame)
        return frame

    async def recv_until(self, frame_type: str, timeout: float = RECV_TIMEOUT_S) -> list[Frame]:
        """Frames up to and including the first of `frame_type`."""
        frames: list[Frame] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                frames.append(frame)
                if frame["type"] == frame_type:
                    return frames

    async def ready(self) -> Frame:
        frame = await self.recv()
        assert frame["type"] == "session.ready", frame
        return frame

    async def ask(self, text: str, message_id: str | None = None) -> list[Frame]:
        """Send a user message; return every frame through its `response.done`."""
        frame: Frame = {"type": "user.message", "text": text}
        if message_id is not None:
            frame["id"] = message_id
        await self.send(frame)
        return await self.recv_until("response.done")

    async def speak(self, script: Callable[[], None], text: str = "hello") -> None:
        """Send one message and wait for its answer: a session is stored with its first message.
        `script` queues the model's reply (e.g. `lambda: fake_groq.script(text_reply("hi"))`)."""
        script()
        done = (await self.ask(text))[-1]
        assert done["status"] == "completed", done

    async def closed_with(self, timeout: float = RECV_TIMEOUT_S) -> int | None:
        """Wait for the server to close the socket; return the close code."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.recv(timeout)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        return None


def types_of(frames: list[Frame]) -> list[str]:
    return [frame["type"] for frame in frames]
