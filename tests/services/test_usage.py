"""Usage limits on one server: each owner (an API key here) has its own counts and limits, and a
store that does not answer the check refuses the message rather than letting it pass unchecked."""

from __future__ import annotations

import httpx

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.client import Frame
from tests.support.server import RunningServer
from tests.support.stall import stalled
from tests.support.waiting import wait_until

KEY_A = "usage-key-a"
KEY_B = "usage-key-b"


async def _usage(server: RunningServer, key: str | None = None) -> Frame:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with httpx.AsyncClient(
        base_url=server.http_url, headers=headers, trust_env=False, verify=False
    ) as http:
        response = await http.get("/api/usage")
    assert response.status_code == 200, response.text
    usage: Frame = response.json()
    return usage


async def test_each_api_key_has_its_own_limit(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(auth_mode="api_key", api_keys=[KEY_A, KEY_B], owner_tokens_per_day=1)
    fake_groq.script(text_reply("the answer for A"), text_reply("the answer for B"))
    async with server.connect(f"token={KEY_A}") as first:
        await first.ready()
        assert (await first.ask("hello"))[-1]["status"] == "completed"

        async def counted() -> bool:
            return bool((await _usage(server, KEY_A))["tokens_today"]["used"] > 1)

        await wait_until(counted, 10, what="A's answer's tokens to be counted")
        await first.send({"type": "user.message", "text": "one more"})
        refusal = await first.recv()
    before_b = await _usage(server, KEY_B)
    async with server.connect(f"token={KEY_B}") as other:
        await other.ready()
        answered = (await other.ask("hello from B"))[-1]
    assert refusal["type"] == "error"
    assert refusal["code"] == "usage_limit_exceeded"
    # A's day is used up; B's count is its own, untouched by A's.
    assert before_b["tokens_today"] == {**before_b["tokens_today"], "used": 0, "limit": 1}
    assert answered["status"] == "completed"
    assert len(fake_groq.requests) == 2  # A's refused message never reached the model


async def test_a_check_the_store_cannot_answer_refuses_the_message_retryably(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    # A new session's place in its hour is a write: with the store locked it cannot be taken.
    server = start_server(owner_sessions_per_hour=1, database_timeout_s=0.2)
    fake_groq.script(text_reply("taken after all"))
    async with server.connect() as client:
        await client.ready()
        with stalled(server):
            await client.send({"type": "user.message", "text": "hello", "id": "m1"})
            refusal = await client.recv()
        frames = await client.ask("hello", "m1")
    usage = await _usage(server)
    assert refusal["type"] == "error"
    assert refusal["code"] == "store_unavailable"
    assert refusal["retryable"] is True
    assert frames[-1]["status"] == "completed"
    # The refused attempt counted nothing: the session took its one place with the resend.
    assert usage["sessions_this_hour"]["used"] == 1
