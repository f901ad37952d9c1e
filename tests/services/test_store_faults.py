"""Store faults: while the database refuses writes, acknowledgements wait and catch up, the
buffer is bounded (new messages are refused retryably), and nothing acknowledged is lost."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.rest import wait_for_session


async def test_locked_database_delays_acks_refuses_beyond_the_bound_and_loses_nothing(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(write_buffer_max=1)
    fake_groq.answer_model("test-model", text_reply("stored"))
    lock = sqlite3.connect(server.settings.sqlite_path(), timeout=5, isolation_level=None)
    async with server.connect() as first, server.connect() as second:
        first_id = (await first.ready())["session_id"]
        second_id = (await second.ready())["session_id"]
        # Both sessions are stored (a session is stored with its first message), and the
        # one-event buffer is empty again.
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            for client, session_id in ((first, first_id), (second, second_id)):
                await client.speak(lambda: None)
                await wait_for_session(http, session_id, lambda s: s["event_count"] == 2)
        lock.execute("begin exclusive")  # the database now refuses every write
        try:
            await first.send({"type": "user.message", "text": "kept", "id": "a1"})
            # The first message waits in the bounded buffer, which is now full.
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                assert (await http.get("/readyz")).status_code == 503
            await second.send({"type": "user.message", "text": "refused", "id": "b1"})
            refusal = await second.recv()
            # Not acknowledged while the store refuses it.
            with pytest.raises(TimeoutError):
                await first.recv(timeout=0.3)
        finally:
            lock.execute("rollback")
        ack = await first.recv()
        done = (await first.recv_until("response.done"))[-1]
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            # The buffer drains once the store is back; then messages are accepted again.
            await wait_for_session(http, first_id, lambda s: s["event_count"] == 4)
        await second.send({"type": "user.message", "text": "retried", "id": "b1"})
        retried = await second.recv_until("response.done")
    lock.close()
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        await wait_for_session(http, second_id, lambda s: s["event_count"] == 4)
    assert refusal["type"] == "error"
    assert refusal["code"] == "store_unavailable"
    assert refusal["retryable"] is True
    assert ack == {**ack, "type": "user.message", "id": "a1", "seq": 3}
    assert done["status"] == "completed"
    assert retried[0]["id"] == "b1"
    with server.db() as db:
        rows = db.execute(
            "select session_id, seq, type from session_events order by session_id, seq"
        ).fetchall()
    by_session: dict[str, list[int]] = {}
    for row in rows:
        by_session.setdefault(row["session_id"], []).append(row["seq"])
    assert by_session[first_id] == [1, 2, 3, 4]
    assert by_session[second_id] == [1, 2, 3, 4]
