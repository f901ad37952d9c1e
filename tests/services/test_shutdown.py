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

from tests.conftest import BACKGROUND_SUMMARY
from tests.fakes.groq_server import FakeGroq, hold_reply, stall_reply, text_reply
from tests.support.client import Frame, WsClient
from tests.support.process import ServerProcess, fake_groq_env
from tests.support.waiting import wait_until

SUMMARY_MODEL = "summary-under-test"
SUMMARY = "The user asked a question and got an answer."


def _env(fake: FakeGroq, database: Path, grace_s: float) -> dict[str, str]:
    return fake_groq_env(fake.base_url, database_url=f"sqlite:///{database}", grace_s=grace_s)


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


def _summary_claim(database: Path, session_id: str) -> tuple[str, str | None, str | None]:
    """The summary job's status, claim token and claimant."""
    with sqlite3.connect(database) as db:
        status, token, claimant = db.execute(
            "select summary_status, summary_claim, summary_claimed_by from sessions where id = ?",
            (session_id,),
        ).fetchone()
    return status, token, claimant


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


async def test_a_connection_while_draining_is_refused_with_1001(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    fake_groq.script(stall_reply("x"))
    server = ServerProcess(_env(fake_groq, tmp_path / "app.db", 30.0), tmp_path).start()
    try:
        async with connect(server.ws_url) as connection:
            client = WsClient(connection)
            await client.ready()
            await client.send({"type": "user.message", "text": "go", "id": "m1"})
            await client.recv_until("response.delta")
            # The drain waits for this stalled response: new connections arrive while it drains.
            server.signal(signal.SIGTERM)
            refusal, code = await _refusal_while_draining(server.ws_url)
            await client.send({"type": "response.cancel"})
            await client.recv_until("response.done")
            assert await _closed_code(client) == 1001
        server.wait()
    finally:
        server.stop()
    assert (refusal["code"], refusal["retryable"]) == ("internal_error", True)
    assert code == 1001  # going away: come back later, the request itself was fine


async def _refusal_while_draining(url: str) -> tuple[dict[str, object], int | None]:
    """Connect until the server, which has just been signalled, refuses: the refusal frame and
    its close code."""
    found: list[tuple[dict[str, object], int | None]] = []

    async def refused() -> bool:
        async with connect(url) as connection:
            client = WsClient(connection)
            frame = await client.recv()
            if frame["type"] == "session.ready":
                return False  # the signal is not handled yet
            found.append((frame, await client.closed_with()))
            return True

    await wait_until(refused, 10, what="a refusal while draining")
    return found[0]


async def _wait_for_summary(
    database: Path, session_id: str, summary: str = BACKGROUND_SUMMARY
) -> None:
    async def summarized() -> bool:
        return _summary(database, session_id) == ("done", summary)

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


# A job claimed by a process that is gone is taken over after this only when nothing tells the
# others that it is gone: the tests below would time out waiting for it.
LONG_CLAIM_TIMEOUT = {"SUMMARY_CLAIM_TIMEOUT_S": "120", "SUMMARY_MODEL": SUMMARY_MODEL}


async def _chat_and_leave(server: ServerProcess, text: str) -> str:
    async with connect(server.ws_url) as connection:
        client = WsClient(connection)
        session_id: str = (await client.ready())["session_id"]
        assert (await client.ask(text))[-1]["status"] == "completed"
    return session_id


async def test_a_summary_running_at_sigterm_is_handed_back_and_made_at_once_after_restart(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    database = tmp_path / "app.db"
    env = _env(fake_groq, database, 1.0) | LONG_CLAIM_TIMEOUT
    fake_groq.script(text_reply("an answer"), stall_reply("never finished"))
    server = ServerProcess(env | {"STATE_DIR": str(tmp_path / "first")}, tmp_path).start()
    try:
        session_id = await _chat_and_leave(server, "a question")
        await asyncio.to_thread(fake_groq.wait_for_requests, 2)
        assert _summary_claim(database, session_id)[0] == "running"
        server.signal(signal.SIGTERM)
        server.wait()
    finally:
        server.stop()
    # Handed back on the way out: pending, nobody's claim.
    assert _summary_claim(database, session_id) == ("pending", None, None)

    fake_groq.script(text_reply(SUMMARY))
    # Another state directory: the new process is not the old one's successor in its slot, so
    # only the hand back lets it make the summary before the claim goes stale.
    restarted = ServerProcess(env | {"STATE_DIR": str(tmp_path / "second")}, tmp_path).start()
    try:
        await _wait_for_summary(database, session_id, SUMMARY)
    finally:
        restarted.stop()


async def _resume(server: ServerProcess, session_id: str) -> Frame:
    """The first frame a resume gets: `session.ready`, or the refusal."""
    async with connect(f"{server.ws_url}?session_id={session_id}") as connection:
        return await WsClient(connection).recv()


async def test_after_sigkill_a_restart_in_the_same_state_dir_frees_leases_and_jobs_at_once(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    database = tmp_path / "app.db"
    state_dir = tmp_path / "state"
    # Without the takeover, the killed process's lease would hold its session for a minute.
    env = _env(fake_groq, database, 1.0) | LONG_CLAIM_TIMEOUT | {"LEASE_TTL_S": "60"}
    fake_groq.script(text_reply("an answer"), stall_reply("never finished"))
    doomed = ServerProcess(env | {"STATE_DIR": str(state_dir)}, tmp_path).start()
    try:
        left = await _chat_and_leave(doomed, "a question")
        await asyncio.to_thread(fake_groq.wait_for_requests, 2)  # its summary is running
        # Titles and summaries from here on never finish in this process.
        fake_groq.answer_model(SUMMARY_MODEL, stall_reply("never finished"))
        async with connect(doomed.ws_url) as connection:
            client = WsClient(connection)
            held = str((await client.ready())["session_id"])
            # Spoken once: the session is stored, and its lease held by this process.
            await client.speak(lambda: fake_groq.script(text_reply("held answer")))
            doomed.signal(signal.SIGKILL)
            doomed.wait()
    finally:
        doomed.stop()

    # A process elsewhere cannot tell that the holder died: busy, and the summary stays claimed.
    elsewhere = ServerProcess(env | {"STATE_DIR": str(tmp_path / "other")}, tmp_path).start()
    try:
        refusal = await _resume(elsewhere, held)
        claim = _summary_claim(database, left)
    finally:
        elsewhere.stop()
    assert refusal["code"] == "session_busy", refusal
    assert claim[0] == "running"

    fake_groq.answer_model(SUMMARY_MODEL, text_reply(SUMMARY))
    restarted = ServerProcess(env | {"STATE_DIR": str(state_dir)}, tmp_path).start()
    try:
        ready = await _resume(restarted, held)
        await _wait_for_summary(database, left, SUMMARY)
    finally:
        restarted.stop()
    assert ready["type"] == "session.ready", ready
