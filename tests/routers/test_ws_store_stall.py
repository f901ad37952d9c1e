"""While the store stalls, the connection stays responsive: a message not committed in time gets
`store_unavailable` (retryable, nothing acknowledged), pings and cancels are answered, the
client's close is seen, and a reconnect is never refused for good. Once the store is back, the
same message id is acknowledged and answered, and stored once. Each test's session is stored
(it spoke once) before the stall: a session is stored with its first message."""

from __future__ import annotations

import httpx

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.rest import get_events, wait_for_session
from tests.support.stall import stalled

COMMIT_TIMEOUT_S = 0.5


def standing() -> None:
    """The model's replies are the test's standing `answer_model` ones."""


async def test_a_message_the_store_does_not_confirm_in_time_is_refused_retryably(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(store_commit_timeout_s=COMMIT_TIMEOUT_S)
    fake_groq.answer_model("test-model", text_reply("answered"))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.speak(standing, "first")
        with stalled(server):
            await client.send({"type": "user.message", "text": "hello", "id": "m1"})
            await client.send({"type": "ping"})
            await client.send({"type": "response.cancel"})
            await client.send({"type": "user.message", "text": "hello", "id": "m1"})
            during = [await client.recv(timeout=COMMIT_TIMEOUT_S * 6) for _ in range(4)]
        # The store is back and takes the queued write; the client sends the message again, as
        # the error told it to, and gets the acknowledgement and the answer.
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            await wait_for_session(http, session_id, lambda s: s["event_count"] == 3)
        await client.send({"type": "user.message", "text": "hello", "id": "m1"})
        after = await client.recv_until("response.done")
    assert [(f["type"], f.get("code"), f.get("retryable")) for f in during] == [
        ("error", "store_unavailable", True),
        ("pong", None, None),
        ("error", "no_active_response", False),
        ("error", "store_unavailable", True),
    ]
    assert after[0] == {**after[0], "type": "user.message", "id": "m1", "seq": 3}
    assert after[-1]["status"] == "completed"
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        await wait_for_session(http, session_id, lambda s: s["event_count"] == 4)
        events = await get_events(http, session_id)
    assert [(e["seq"], e["type"]) for e in events] == [
        (1, "user.message"),
        (2, "assistant.message"),
        (3, "user.message"),
        (4, "assistant.message"),
    ]


async def test_the_clients_close_is_seen_during_a_stall_and_its_reconnect_is_not_refused_for_good(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(store_commit_timeout_s=COMMIT_TIMEOUT_S, resume_wait_s=0.5)
    fake_groq.answer_model("test-model", text_reply("answered"))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.speak(standing)
    with stalled(server):
        async with server.connect(f"session_id={session_id}") as again:
            refusal = await again.recv(timeout=15)
            code = await again.closed_with(timeout=15)
    assert refusal["type"] == "error"
    assert refusal["retryable"] is True
    assert code == 1013
    async with server.connect(f"session_id={session_id}") as resumed:
        assert (await resumed.ready())["session_id"] == session_id


async def test_a_message_sent_again_while_its_first_write_is_pending_is_refused_again(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(store_commit_timeout_s=COMMIT_TIMEOUT_S)
    fake_groq.answer_model("test-model", text_reply("answered once"))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.speak(standing, "first")
        with stalled(server):
            await client.send({"type": "user.message", "text": "slow", "id": "m1"})
            first = await client.recv(timeout=COMMIT_TIMEOUT_S * 6)
            await client.send({"type": "user.message", "text": "another", "id": "m2"})
            second = await client.recv(timeout=COMMIT_TIMEOUT_S * 6)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            await wait_for_session(http, session_id, lambda s: s["event_count"] == 3)
        await client.send({"type": "user.message", "text": "another", "id": "m2"})
        frames = await client.recv_until("response.done")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            await wait_for_session(http, session_id, lambda s: s["event_count"] == 5)
            events = await get_events(http, session_id)
    assert (first["code"], second["code"]) == ("store_unavailable", "store_unavailable")
    # m1 landed late and unanswered; m2 came after it, and the model saw both.
    assert frames[0] == {**frames[0], "type": "user.message", "id": "m2", "seq": 4}
    assert [e.get("id") for e in events if e["type"] == "user.message"][1:] == ["m1", "m2"]
    chat = [r for r in fake_groq.background_requests if r.body.get("model") == "test-model"]
    assert "slow" in str(chat[-1].body["messages"])


async def test_a_first_message_while_the_store_refuses_writes_is_refused_retryably(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(database_timeout_s=1)
    fake_groq.answer_model("test-model", text_reply("answered"))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.speak(standing)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        await wait_for_session(http, session_id, lambda s: s["status"] == "idle")
    with stalled(server):
        # A new connection touches no store; its first message, which stores the session, is
        # refused retryably with nothing stored.
        async with server.connect() as fresh:
            await fresh.ready()
            await fresh.send({"type": "user.message", "text": "hello", "id": "m1"})
            frame = await fresh.recv(timeout=15)
        async with httpx.AsyncClient(base_url=server.http_url, timeout=15) as http:
            deleted = await http.delete(f"/api/sessions/{session_id}")
    assert frame == {**frame, "type": "error", "code": "store_unavailable", "retryable": True}
    assert deleted.status_code == 503
    assert deleted.headers["retry-after"].isdigit()
