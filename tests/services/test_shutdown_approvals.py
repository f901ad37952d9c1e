"""SIGTERM while a response waits for approval and messages are queued (protocol 1.1): the
response ends at once with its calls still pending (`finish_reason: awaiting_approval`), the
queue does not start, and the next process asks again, runs the answered round in a new
response, then answers the queue."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.support.client import WsClient, types_of
from tests.support.process import ServerProcess, fake_groq_env


def _stored(database: Path, session_id: str) -> list[dict[str, object]]:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "select data from session_events where session_id = ? order by seq", (session_id,)
        ).fetchall()
    return [orjson.loads(row[0]) for row in rows]


async def test_sigterm_pauses_a_response_waiting_for_approval_and_the_restart_goes_on(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    database = tmp_path / "app.db"
    # A long grace: the paused response must not wait for it (nor be cancelled by it).
    env = fake_groq_env(fake_groq.base_url, database_url=f"sqlite:///{database}", grace_s=30.0)
    fake_groq.script(tool_call_reply(("update_user_plan", {"user_id": "456", "plan": "pro"})))
    server = ServerProcess(env | {"STATE_DIR": str(tmp_path / "first")}, tmp_path).start()
    try:
        async with connect(server.ws_url) as connection:
            client = WsClient(connection)
            session_id = str((await client.ready())["session_id"])
            await client.send({"type": "user.message", "text": "upgrade 456"})
            request = (await client.recv_until("tool.approval_requested"))[-1]
            await client.send(
                {"type": "user.message", "text": "and then?", "while_busy": "enqueue"}
            )
            assert (await client.recv())["queued"] is True
            server.signal(signal.SIGTERM)
            done = (await client.recv_until("response.done", timeout=10))[-1]
            assert done["status"] == "completed"
            assert done["finish_reason"] == "awaiting_approval"
            assert await client.closed_with(timeout=10) == 1001
        assert server.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    stored = _stored(database, session_id)
    assert [e["type"] for e in stored] == [
        "user.message",
        "tool.call",
        "tool.approval_requested",
        "user.message",
        "assistant.message",
    ]
    assert not any(e["type"] == "tool.result" for e in stored)  # the call is still pending
    assert len(fake_groq.requests) == 1  # the queued message did not start

    fake_groq.script(text_reply("456 is on pro now."), text_reply("Nothing else."))
    restarted = ServerProcess(env | {"STATE_DIR": str(tmp_path / "second")}, tmp_path).start()
    try:
        async with connect(f"{restarted.ws_url}?session_id={session_id}") as connection:
            client = WsClient(connection)
            ready = await client.ready()
            assert ready["pending_approvals"] == [request["call_id"]]
            await client.send(
                {"type": "tool.approval", "call_id": request["call_id"], "approved": True}
            )
            frames = await client.recv_until("response.done")
            assert types_of(frames) == [
                "tool.approval",
                "response.started",
                "tool.result",
                "response.delta",
                "response.done",
            ]
            assert frames[1]["response_id"] != request["response_id"]
            assert frames[2]["ok"] is True
            # Then the queued message, in its turn.
            queued = await client.recv_until("response.done")
            assert queued[-1]["text"] == "Nothing else."
    finally:
        restarted.stop()

    def roles(index: int) -> list[str]:
        messages = fake_groq.requests[index].body["messages"]
        return [m["content"] if m["role"] == "user" else m["role"] for m in messages[1:]]

    assert roles(1) == ["upgrade 456", "assistant", "tool"]
    assert roles(2) == ["upgrade 456", "assistant", "tool", "assistant", "and then?"]
