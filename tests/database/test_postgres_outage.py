"""PostgreSQL goes away mid-conversation (a private server of the test's own is stopped, then
started): a message the store cannot confirm in time is refused retryably and not acknowledged,
/readyz says 503 meanwhile, the client's resend of the same id is acknowledged and answered once
the store is back, and every acknowledged event is stored exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.client import Frame, WsClient
from tests.support.private_postgres import PrivatePostgres, private_postgres
from tests.support.rest import wait_for_session
from tests.support.waiting import wait_until

COMMIT_TIMEOUT_S = 1.0


@pytest.fixture
def database() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


async def _resend_until_acknowledged(client: WsClient, frame: Frame) -> list[Frame]:
    """Send `frame` again while the store is still catching up (each refusal is retryable);
    return every answer, the acknowledgement last."""
    answers: list[Frame] = []

    async def acknowledged() -> bool:
        await client.send(frame)
        answers.append(await client.recv(timeout=COMMIT_TIMEOUT_S + 5))
        if answers[-1]["type"] == "error":
            assert (answers[-1]["code"], answers[-1]["retryable"]) == ("store_unavailable", True)
            return False
        return True

    await wait_until(acknowledged, 30, what="the resent message to be acknowledged")
    return answers


async def test_a_message_the_store_cannot_confirm_is_refused_then_resent_once_it_is_back(
    database: PrivatePostgres, start_server: StartServer, fake_groq: FakeGroq
) -> None:
    # The database first: it outlives the server, which stops on a store that answers.
    server = start_server(
        database_url=database.dsn,
        database_timeout_s=1.0,
        store_commit_timeout_s=COMMIT_TIMEOUT_S,
    )
    fake_groq.answer_model("test-model", text_reply("answered"))
    during = {"type": "user.message", "text": "during", "id": "m2"}
    async with server.connect() as client, httpx.AsyncClient(base_url=server.http_url) as http:
        session_id = (await client.ready())["session_id"]
        first = (await client.ask("before", message_id="m1"))[-1]
        await asyncio.to_thread(database.stop, mode="fast")
        try:

            async def not_ready() -> bool:
                return (await http.get("/readyz")).status_code == 503

            await wait_until(not_ready, 10, what="/readyz to report the outage")
            await client.send(during)
            refusal = await client.recv(timeout=COMMIT_TIMEOUT_S + 5)
        finally:
            await asyncio.to_thread(database.start)
        answers = await _resend_until_acknowledged(client, during)
        done = (await client.recv_until("response.done", timeout=30))[-1]
        await wait_for_session(http, session_id, lambda s: s["event_count"] == 4, timeout=30)
        assert (await http.get("/readyz")).status_code == 200
    assert refusal["type"] == "error", refusal
    assert (refusal["code"], refusal["retryable"]) == ("store_unavailable", True)
    ack = answers[-1]
    assert (ack["type"], ack["id"], ack["seq"], ack["text"]) == ("user.message", "m2", 3, "during")
    assert done["status"] == "completed"
    conn = await asyncpg.connect(database.dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "select seq, type, message_id, data->>'text' as text from session_events "
            "where session_id = $1 order by seq",
            session_id,
        )
    finally:
        await conn.close()
    assert [(r["seq"], r["type"]) for r in rows] == [
        (1, "user.message"),
        (2, "assistant.message"),
        (3, "user.message"),
        (4, "assistant.message"),
    ]
    assert [r["message_id"] for r in rows if r["type"] == "user.message"] == ["m1", "m2"]
    assert [r["text"] for r in rows] == ["before", first["text"], "during", done["text"]]
