"""Usage limits per owner, counted in the store: two server processes on one SQLite file or one
PostgreSQL database see one count. A message over a limit is refused before any model call and
before anything is stored, retryably, with when it resets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.fakes.groq_server import FakeGroq, text_reply
from tests.scaleout.conftest import StartInstance
from tests.support.client import Frame, WsClient
from tests.support.process import ServerProcess
from tests.support.waiting import wait_until


@pytest.fixture(params=["sqlite", "postgresql"])
def two_instances(
    request: pytest.FixtureRequest, start_instance: StartInstance, tmp_path: Path
) -> StartInstance:
    """Start instances on the shared PostgreSQL database, or on one shared SQLite file."""
    store = {} if request.param == "postgresql" else {"DATABASE_URL": f"sqlite:///{tmp_path}/a.db"}

    def start(**env: str) -> ServerProcess:
        return start_instance(**store, **env)

    return start


async def _open(instance: ServerProcess, session_id: str | None = None) -> WsClient:
    url = instance.ws_url if session_id is None else f"{instance.ws_url}?session_id={session_id}"
    client = WsClient(await connect(url))
    client.session_id = str((await client.ready())["session_id"])
    return client


async def _refused(client: WsClient, text: str = "one more") -> Frame:
    await client.send({"type": "user.message", "text": text})
    frame = await client.recv()
    assert frame["type"] == "error", frame
    return frame


def _http(base_url: str) -> httpx.AsyncClient:
    # Plain HTTP to loopback: no certificate store to load (that takes a step of 100 ms of CPU,
    # which the loop guard would catch) on each of the many polls.
    return httpx.AsyncClient(base_url=base_url, trust_env=False, verify=False)


async def _usage(instance: ServerProcess) -> Frame:
    base = instance.ws_url.replace("ws://", "http://").removesuffix("/ws")
    async with _http(base) as http:
        response = await http.get("/api/usage")
    assert response.status_code == 200, response.text
    usage: Frame = response.json()
    return usage


async def test_tokens_used_on_one_instance_count_on_the_other(
    two_instances: StartInstance, fake_groq: FakeGroq
) -> None:
    first, second = two_instances(OWNER_TOKENS_PER_DAY="5"), two_instances(OWNER_TOKENS_PER_DAY="5")
    fake_groq.script(text_reply("an answer that uses tokens"))
    talker = await _open(first)
    assert (await talker.ask("hello"))[-1]["status"] == "completed"
    await talker.connection.close()

    async def counted() -> bool:
        return bool((await _usage(second))["tokens_today"]["used"] > 5)

    # Counted as the answer is stored, which the writer does just after sending it.
    await wait_until(counted, 10, what="the answer's tokens to be counted")
    asked_before = len(fake_groq.requests)
    other = await _open(second)
    refusal = await _refused(other)
    usage = await _usage(second)
    await other.connection.close()
    base = second.ws_url.replace("ws://", "http://").removesuffix("/ws")
    async with _http(base) as http:
        metrics = (await http.get("/metrics")).text
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    assert refusal["code"] == "usage_limit_exceeded"
    assert refusal["retryable"] is True
    assert datetime.fromisoformat(refusal["resets_at"]) == datetime(
        tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC
    )
    assert tomorrow.isoformat() in refusal["message"]
    assert len(fake_groq.requests) == asked_before  # no model call
    assert usage["tokens_today"]["limit"] == 5
    assert usage["tokens_today"]["used"] > 5
    assert 'chat_usage_refusals_total{limit="tokens_per_day"} 1.0' in metrics


async def test_live_sessions_are_limited_across_instances(
    two_instances: StartInstance, fake_groq: FakeGroq
) -> None:
    first = two_instances(OWNER_MAX_LIVE_SESSIONS="1")
    second = two_instances(OWNER_MAX_LIVE_SESSIONS="1")
    fake_groq.script(text_reply("first"), text_reply("second"))
    holder = await _open(first)
    assert (await holder.ask("hello"))[-1]["status"] == "completed"
    waiting = await _open(second)
    refusal = await _refused(waiting)
    assert (await _usage(second))["live_sessions"] == {"used": 1, "limit": 1, "resets_at": None}
    await holder.connection.close()

    async def freed() -> bool:
        return bool((await _usage(second))["live_sessions"]["used"] == 0)

    await wait_until(freed, 10, what="the first session's lease to be released")
    done = (await waiting.ask("now?"))[-1]
    await waiting.connection.close()
    assert refusal["code"] == "usage_limit_exceeded"
    assert refusal["retryable"] is True
    assert "resets_at" not in refusal
    assert done["status"] == "completed"


async def test_new_sessions_per_hour_are_limited_across_instances(
    two_instances: StartInstance, fake_groq: FakeGroq
) -> None:
    first = two_instances(OWNER_SESSIONS_PER_HOUR="1")
    second = two_instances(OWNER_SESSIONS_PER_HOUR="1")
    fake_groq.script(text_reply("first"), text_reply("again"))
    talker = await _open(first)
    assert (await talker.ask("hello"))[-1]["status"] == "completed"
    await talker.connection.close()
    fresh = await _open(second)
    refusal = await _refused(fresh)
    await fresh.connection.close()
    # The session that counted may go on talking, on any instance.
    resumed = await _open(second, talker.session_id)
    done = (await resumed.ask("still there?"))[-1]
    await resumed.connection.close()
    next_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert refusal["code"] == "usage_limit_exceeded"
    assert datetime.fromisoformat(refusal["resets_at"]) == next_hour
    assert done["status"] == "completed"
