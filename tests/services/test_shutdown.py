"""Process faults: SIGTERM drains (responses finish or are stored cancelled, sockets close with
1001), SIGKILL loses nothing acknowledged, and the next start makes the pending summaries."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect

from tests.conftest import BACKGROUND_SUMMARY, BACKGROUND_SUMMARY_MODEL
from tests.fakes.groq_server import FakeGroq, hold_reply, stall_reply, text_reply
from tests.support.client import WsClient
from tests.support.process import ServerProcess
from tests.support.waiting import wait_until


def _env(fake: FakeGroq, database: Path, grace_s: float) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{database}",
        "LLM_PROVIDER": "groq",
        "GROQ_API_KEY": "test-key",
        "GROQ_BASE_URL": fake.base_url,
        "GROQ_MODEL": "test-model",
        "SUMMARY_MODEL": BACKGROUND_SUMMARY_MODEL,
        "TITLE_MODEL": BACKGROUND_SUMMARY_MODEL,
        "LLM_MAX_RETRIES": "0",
        "SHUTDOWN_GRACE_S": str(grace_s),
        "LOG_LEVEL": "WARNING",
    }


def _rows(database: Path, session_id: str) -> list[dict[str, object]]:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "select data from session_events where session_id = ? order by seq", (session_id,)
        ).fetchall()
    return [orjson.loads(row[0]) for row in rows]


def _summary(database: Path, session_id: str) -> tuple[str, str | None]:
    with sqlite3.connect(database) as db:
        status, summary = db.execute(
            "select summary_status, summary from sessions where id = ?", (session_id,)
        ).fetchone()
    return status, summary


async def _closed_code(client: WsClient) -> int | None:
    return await client.closed_with(timeout=15)


@pytest.mark.parametrize(("grace_s", "finishes"), [(10.0, True), (0.3, False)])
async def test_sigterm_drains_then_closes_with_1001(
    tmp_path: Path, fake_groq: FakeGroq, grace_s: float, finishes: bool
) -> None:
    database = tmp_path / "app.db"
    reply = (
        hold_reply(*[f"w{i} " for i in range(12)], delay_s=0.05) if finishes else stall_reply("x")
    )
    fake_groq.script(reply)
    server = ServerProcess(_env(fake_groq, database, grace_s), tmp_path).start()
    try:
        async with connect(server.ws_url) as connection:
            client = WsClient(connection)
            session_id = (await client.ready())["session_id"]
            await client.send({"type": "user.message", "text": "go", "id": "m1"})
            await client.recv_until("response.delta")
            server.signal(signal.SIGTERM)
            done = (await client.recv_until("response.done", timeout=15))[-1]
            code = await _closed_code(client)
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert server.wait() in (0, -signal.SIGTERM)
    finally:
        server.stop()
    assert code == 1001
    if finishes:
        assert done["status"] == "completed"
        assert done["text"] == "".join(f"w{i} " for i in range(12))
    else:
        assert done["status"] == "cancelled"
        await asyncio.to_thread(fake_groq.wait_for_disconnect)
    stored = _rows(database, session_id)
    assert [e["type"] for e in stored] == ["user.message", "assistant.message"]
    assert stored[1]["status"] == done["status"]
    assert stored[1]["text"] == done["text"]
    # The summary was marked pending before the process ended; the next start makes it.
    assert _summary(database, session_id)[0] in ("pending", "running", "done")
    if not finishes:
        return
    restarted = ServerProcess(_env(fake_groq, database, grace_s), tmp_path).start()
    try:
        await _wait_for_summary(database, session_id)
    finally:
        restarted.stop()


async def _wait_for_summary(database: Path, session_id: str) -> None:
    async def summarized() -> bool:
        return _summary(database, session_id) == ("done", BACKGROUND_SUMMARY)

    await wait_until(summarized, 10, what="the summary made at the next start")


async def test_after_sigkill_acknowledged_events_are_stored_and_summarized_at_next_start(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    database = tmp_path / "app.db"
    fake_groq.script(text_reply("first answer"), stall_reply("never finished"))
    server = ServerProcess(_env(fake_groq, database, 5), tmp_path).start()
    try:
        async with connect(server.ws_url) as connection:
            client = WsClient(connection)
            session_id = (await client.ready())["session_id"]
            await client.ask("one", message_id="m1")
            await client.send({"type": "user.message", "text": "two", "id": "m2"})
            ack = await client.recv()
            await client.recv_until("response.delta")
            server.signal(signal.SIGKILL)
            server.wait()
    finally:
        server.stop()
    assert ack["type"] == "user.message"
    stored = _rows(database, session_id)
    assert [e.get("id") for e in stored if e["type"] == "user.message"] == ["m1", "m2"]
    fake_groq.script(text_reply("back again"))
    restarted = ServerProcess(_env(fake_groq, database, 5), tmp_path).start()
    try:
        await _wait_for_summary(database, session_id)
        async with connect(f"{restarted.ws_url}?session_id={session_id}") as connection:
            client = WsClient(connection)
            events = (await client.ready())["events"]
            done = (await client.ask("are you back?"))[-1]
    finally:
        restarted.stop()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert done["status"] == "completed"
