"""Shutdown during a store outage: the process still ends within its grace period, the events the
store could not take are spilled to the slot's file, and the next process in the same state
directory replays them into the store, exactly once, before it serves."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, hold_reply, text_reply, tool_call_reply
from tests.support.client import Frame, WsClient, types_of
from tests.support.private_postgres import PrivatePostgres, private_postgres
from tests.support.process import ServerProcess, fake_groq_env
from tests.support.rest import get_events, wait_for_session

GRACE_S = 2.0
# What shutdown may take beyond the grace: the writer's last try, cancelled tasks that wait on
# the dead store, closing the pool. Generous: the point is that it ends, not how fast.
EXIT_MARGIN_S = 5.0
BEFORE_TOOL = ["Let ", "me ", "work ", "it ", "out. "]
ANSWER = ["The ", "answer ", "is ", "42."]


@pytest.fixture
def database() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


def _env(fake: FakeGroq, dsn: str, state_dir: Path) -> dict[str, str]:
    settings = fake_groq_env(fake.base_url, database_url=dsn, grace_s=GRACE_S)
    return settings | {"DATABASE_TIMEOUT_S": "1", "STATE_DIR": str(state_dir)}


async def _stored(dsn: str, session_id: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "select data from session_events where session_id = $1 order by seq", session_id
        )
    finally:
        await conn.close()
    return [orjson.loads(row["data"]) for row in rows]


def _spilled(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def _answer_with_outage(
    server: ServerProcess, database: PrivatePostgres
) -> tuple[str, Frame, float]:
    """Ask a question whose answer streams; stop the database mid-answer, then SIGTERM. Returns
    the session, the `response.done` the client saw, and how long the process took to exit."""
    async with connect(server.ws_url) as connection:
        client = WsClient(connection)
        session_id = str((await client.ready())["session_id"])
        await client.send({"type": "user.message", "text": "what is 6*7?", "id": "m1"})
        ack = await client.recv()
        assert ack["type"] == "user.message", ack  # committed before the outage
        await client.recv_until("response.delta")
        await asyncio.to_thread(database.stop, mode="immediate")
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        exited = asyncio.create_task(asyncio.to_thread(server.wait, 30))
        frames = await client.recv_until("response.done", timeout=15)
        code = await client.closed_with(timeout=15)
        exit_status = await exited
        took = time.monotonic() - signalled
    assert code == 1001
    # A clean stop (uvicorn re-raises the signal once it has shut down cleanly), every part
    # of it done (uvicorn exits normally even when the lifespan's shutdown fails).
    assert exit_status in (0, -signal.SIGTERM), server.log.read_text()
    assert "Application shutdown failed" not in server.log.read_text()
    assert "tool.result" in [frame["type"] for frame in frames]
    return session_id, frames[-1], took


async def test_shutdown_in_an_outage_ends_in_time_spills_and_the_next_start_replays_once(
    tmp_path: Path, fake_groq: FakeGroq, database: PrivatePostgres
) -> None:
    state_dir = tmp_path / "state"
    spill = state_dir / "instances" / "0.spill.jsonl"
    # The answer streams slowly enough to stop the database in its middle; it calls a tool
    # that needs no store, and ends well within the grace period.
    slow_tool_round = dataclasses.replace(
        tool_call_reply(("calculate", {"expression": "6*7"}), text_before=BEFORE_TOOL),
        delay_s=0.25,
    )
    fake_groq.script(slow_tool_round, hold_reply(*ANSWER, delay_s=0.05))
    server = ServerProcess(_env(fake_groq, database.dsn, state_dir), tmp_path).start()
    try:
        session_id, done, took = await _answer_with_outage(server, database)
    finally:
        server.stop()

    print(f"shutdown during the outage took {took:.2f} s (grace {GRACE_S:g} s)")
    assert took < GRACE_S + EXIT_MARGIN_S
    assert done["status"] == "completed"
    assert done["text"] == "".join(BEFORE_TOOL + ANSWER)
    # What the store did not take is on disk: the events after the acknowledged message (the
    # tool's, unless written in the moment before the database stopped) up to the answer.
    spilled = _spilled(spill)
    assert {line["session_id"] for line in spilled} == {session_id}
    assert [line["event"]["seq"] for line in spilled] in ([2, 3, 4], [3, 4], [4])
    assert spilled[-1]["event"]["type"] == "assistant.message"
    kept = tmp_path / "spill-copy.jsonl"
    shutil.copyfile(spill, kept)

    database.start()
    restarted = ServerProcess(_env(fake_groq, database.dsn, state_dir), tmp_path).start()
    try:
        # Replayed before the server answered its first request.
        stored = await _stored(database.dsn, session_id)
        assert not spill.exists()
        async with connect(f"{restarted.ws_url}?session_id={session_id}") as connection:
            resumed = (await WsClient(connection).ready())["events"]
        # A crash after the replay, before the file was removed: the next start replays it
        # again, and stores nothing twice.
        restarted.signal(signal.SIGKILL)
        restarted.wait()
    finally:
        restarted.stop()
    shutil.copyfile(kept, spill)
    again = ServerProcess(_env(fake_groq, database.dsn, state_dir), tmp_path).start()
    try:
        stored_again = await _stored(database.dsn, session_id)
        assert not spill.exists()
    finally:
        again.stop()

    assert [event["seq"] for event in stored] == [1, 2, 3, 4]
    assert [event["type"] for event in stored] == [
        "user.message",
        "tool.call",
        "tool.result",
        "assistant.message",
    ]
    assert stored[0]["id"] == "m1"
    assert (stored[3]["status"], stored[3]["text"]) == ("completed", done["text"])
    assert stored[3]["response_id"] == done["response_id"]
    assert resumed == stored
    assert stored_again == stored
    assert not spill.with_suffix(".rejected").exists()


async def test_a_message_refused_in_an_outage_and_spilled_is_answered_when_resent_after_restart(
    database: PrivatePostgres, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    settings = {
        "database_url": database.dsn,
        "database_timeout_s": 1.0,
        "store_commit_timeout_s": 1.0,
    }
    fake_groq.answer_model("test-model", text_reply("answered"))
    during = {"type": "user.message", "text": "during", "id": "m2"}
    first = start_server(**settings)
    spill = Path(first.settings.state_dir) / "instances" / "0.spill.jsonl"
    async with first.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.ask("before", message_id="m1")
        async with httpx.AsyncClient(base_url=first.http_url) as http:
            await wait_for_session(http, session_id, lambda s: s["event_count"] == 2)
        await asyncio.to_thread(database.stop, mode="fast")
        await client.send(during)
        refusal = await client.recv(timeout=6)
    first.stop()  # the store is still down: the message, queued all along, is spilled
    assert (refusal["code"], refusal["retryable"]) == ("store_unavailable", True)
    assert [line["event"]["id"] for line in _spilled(spill)] == ["m2"]

    await asyncio.to_thread(database.start)
    second = start_server(**settings)
    async with second.connect(f"session_id={session_id}") as client:
        stored_before = (await client.ready())["events"]
        # The client was told nothing was acknowledged, so it sends the message again.
        await client.send(during)
        frames = await client.recv_until("response.done", timeout=10)
    async with httpx.AsyncClient(base_url=second.http_url) as http:
        # The answer is written within the writer's flush interval after `response.done`.
        await wait_for_session(http, session_id, lambda s: s["event_count"] == 4)
    assert [(e["type"], e.get("id")) for e in stored_before][-1] == ("user.message", "m2")
    assert types_of(frames) == [
        "user.message",
        "response.started",
        "response.delta",
        "response.done",
    ]
    assert (frames[0]["id"], frames[0]["seq"]) == ("m2", 3)
    assert frames[-1]["status"] == "completed"
    stored = await _stored(database.dsn, session_id)
    assert [(e["seq"], e["type"], e.get("id")) for e in stored] == [
        (1, "user.message", "m1"),
        (2, "assistant.message", None),
        (3, "user.message", "m2"),
        (4, "assistant.message", None),
    ]


async def test_a_spill_file_cut_short_by_a_kill_does_not_stop_the_next_start(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("an answer"))
    first = start_server()
    async with first.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.ask("a question")
    first.stop()
    with closing(first.db()) as db:
        answer = orjson.loads(
            db.execute(
                "select data from session_events where session_id = ? and seq = 2", (session_id,)
            ).fetchone()["data"]
        )
    record = {"session_id": session_id, "holder": "gone", "epoch": 1}
    stored_line = orjson.dumps(record | {"event": answer}) + b"\n"
    # Killed while writing the next line: a replay of what is stored, then half a line.
    torn = (orjson.dumps(record | {"event": answer | {"seq": 3}}) + b"\n")[:60]
    spill = Path(first.settings.state_dir) / "instances" / "0.spill.jsonl"
    spill.write_bytes(stored_line + torn)

    second = start_server()
    async with httpx.AsyncClient(base_url=second.http_url) as http:
        events = await get_events(http, session_id)
    assert not spill.exists()
    assert torn in spill.with_suffix(".rejected").read_bytes()  # kept for an operator
    assert [(e["seq"], e["type"]) for e in events] == [
        (1, "user.message"),
        (2, "assistant.message"),
    ]
