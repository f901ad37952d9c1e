"""Liveness, readiness, metrics, the browser page and the OpenAPI document, on a real server."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from unittest import mock

import aiosqlite
import httpx
import pytest

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.server import RunningServer
from tests.support.waiting import wait_until

PAGE_TEST_IDS = (
    "connect",
    "message-input",
    "send",
    "cancel",
    "transcript",
    "session-list",
    "status",
)
COMPLETED_LINE = 'chat_responses_total{status="completed"} 1.0'


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10, trust_env=False) as client:
        yield client


def metric_value(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in Prometheus text, or None when it is absent."""
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value)
    return None


def can_write(path: str) -> bool:
    """Whether another connection can take the write lock right now (without waiting)."""
    other = sqlite3.connect(path, timeout=0)
    try:
        other.execute("begin immediate")
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()
    return True


async def test_healthz_is_200(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200


async def test_readyz_says_ready_and_names_the_store(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["store"]) == ("ready", "sqlite")
    assert body["services"] == {
        name: {"running": True, "restarts": 0}
        for name in ("event-writer", "lease-heartbeat", "summary-poll", "retention")
    }


async def test_readyz_is_503_while_the_database_is_locked_and_200_once_released(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    assert (await http.get("/readyz")).status_code == 200
    locker = server.db()
    try:
        locker.execute("begin exclusive")
        locked, live = await asyncio.gather(http.get("/readyz"), http.get("/healthz"))
        # The lock really was held: nobody else can write meanwhile.
        assert not can_write(server.settings.sqlite_path())
    finally:
        locker.rollback()
        locker.close()
    assert locked.status_code == 503
    assert live.status_code == 200  # liveness does not depend on the store
    assert locked.json()["store"] == "sqlite"
    assert locked.json()["status"] != "ready"

    async def ready_again() -> bool:
        return (await http.get("/readyz")).status_code == 200

    await wait_until(ready_again, 3.0, what="/readyz to answer 200 after the lock was released")


async def test_metrics_count_a_streamed_answer(
    server: RunningServer, http: httpx.AsyncClient, fake_groq: FakeGroq
) -> None:
    before = await http.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain; version=")
    assert COMPLETED_LINE not in before.text.splitlines()
    assert metric_value(before.text, "chat_tokens_streamed_total") == 0.0

    fake_groq.script(text_reply("one ", "two ", "three"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("count to three")
    deltas = [frame for frame in frames if frame["type"] == "response.delta"]
    assert len(deltas) == 3

    after = await http.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain; version=")
    assert COMPLETED_LINE in after.text.splitlines()
    streamed = metric_value(after.text, "chat_tokens_streamed_total")
    assert streamed is not None
    assert streamed >= len(deltas)
    assert "# TYPE chat_responses_total counter" in after.text


async def test_the_page_has_every_control(http: httpx.AsyncClient) -> None:
    response = await http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    missing = [tid for tid in PAGE_TEST_IDS if f'data-testid="{tid}"' not in response.text]
    assert missing == []


async def test_openapi_lists_the_rest_paths(http: httpx.AsyncClient) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert set(paths["/api/sessions"]) >= {"get"}
    assert set(paths["/api/sessions/{session_id}"]) >= {"get", "delete"}
    assert set(paths["/api/sessions/{session_id}/events"]) >= {"get"}
    assert set(paths["/api/usage"]) >= {"get"}
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "get" in paths[path], path


async def test_a_writer_that_fails_is_restarted_and_readyz_says_so(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server()
    fake_groq.answer_model("test-model", text_reply("still answered"))
    real = aiosqlite.Connection.executemany
    crashed = asyncio.Event()
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def crash_once(self: aiosqlite.Connection, *args: object) -> object:
        if not crashed.is_set():
            loop.call_soon_threadsafe(crashed.set)
            # Stay failed until the test has seen /readyz report it.
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(release.wait(), loop))
            raise RuntimeError("a bug in the write path")
        return await real(self, *args)

    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        with mock.patch.object(aiosqlite.Connection, "executemany", crash_once):
            async with server.connect() as client:
                await client.ready()
                await client.send({"type": "user.message", "text": "hi", "id": "m1"})
                await crashed.wait()
                release.set()

                async def restarting() -> bool:
                    body = (await http.get("/readyz")).json()
                    restarts: int = body["services"]["event-writer"]["restarts"]
                    return restarts == 1

                await wait_until(restarting, what="the writer's restart to show")
                frames = await client.recv_until("response.done")
        ready = await http.get("/readyz")
    assert frames[0] == {**frames[0], "type": "user.message", "id": "m1", "seq": 1}
    assert frames[-1]["text"] == "still answered"
    assert ready.status_code == 200
    assert ready.json()["services"]["event-writer"] == {
        "running": True,
        "restarts": 1,
        "last_error": "RuntimeError: a bug in the write path",
    }
