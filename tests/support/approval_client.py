"""A client's side of tool approval in tests: ask until a call waits, answer it, wait until
the response settles, and what the model read as tools."""

from __future__ import annotations

from typing import Any

from tests.fakes.groq_server import FakeGroq, ToolCallSpec
from tests.support.client import Frame, WsClient

# Grace Hopper (456) is on the free plan in the demo profiles; Ada Lovelace (123) on pro.
TEAM_456 = ToolCallSpec("update_user_plan", {"user_id": "456", "plan": "team"}, id="call_team")
FREE_123 = ToolCallSpec("update_user_plan", {"user_id": "123", "plan": "free"}, id="call_free")


async def ask_until_approval(client: WsClient, text: str = "put 456 on team") -> list[Frame]:
    """Send a message; return its frames through the (last) `tool.approval_requested`."""
    await client.send({"type": "user.message", "text": text})
    return await client.recv_until("tool.approval_requested")


async def answer(
    client: WsClient, call_id: str, *, approved: bool, reason: str | None = None
) -> Frame:
    """Send an answer; return the next frame (its acknowledgement or an error)."""
    frame: dict[str, Any] = {"type": "tool.approval", "call_id": call_id, "approved": approved}
    if reason is not None:
        frame["reason"] = reason
    await client.send(frame)
    return await client.recv()


async def settled(client: WsClient) -> None:
    """Every frame the server sent before now has been read (`pong` answers in order)."""
    await client.send({"type": "ping"})
    assert (await client.recv())["type"] == "pong"


def tool_messages(fake_groq: FakeGroq, request: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = fake_groq.requests[request].body["messages"]
    return [m for m in messages if m["role"] == "tool"]
