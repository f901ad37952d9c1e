"""Joining a running response on one instance (PROTOCOL.md, "Joining a running response"): a
resume while the previous connection's response still runs gets `session.ready` at once with
`live_response`, then the live tail; the text is the whole answer exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from app.services.response_feed import LiveResponses
from tests.conftest import StartServer
from tests.database.conftest import throwaway_database
from tests.fakes.groq_server import FakeGroq, Gate, gated_reply, text_reply, tool_call_reply
from tests.support.client import Frame, WsClient, types_of
from tests.support.server import RunningServer, free_port
from tests.support.waiting import wait_until

BEFORE = ("The answer ", "so far, ")
AFTER = ("and the ", "rest of it.")
WHOLE = "".join(BEFORE + AFTER)


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, start_server: StartServer) -> Iterator[RunningServer]:
    """A server on SQLite or on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield start_server()
        return
    for dsn in throwaway_database("join"):
        yield start_server(database_url=dsn, database_pool_max=4)


async def _left(server: RunningServer, session_id: str) -> None:
    """Wait until the server has seen the client go (its response runs on, detached)."""
    hub = server.app.state.runtime.hub
    await wait_until(lambda: _not_live(hub, session_id), what="the disconnect")


async def _not_live(hub: object, session_id: str) -> bool:
    return not hub.is_live(session_id)  # type: ignore[attr-defined]


async def _start_and_leave(
    server: RunningServer, fake_groq: FakeGroq, gate: Gate, *, tool_first: bool = False
) -> tuple[str, list[Frame]]:
    """Ask a question, read the answer up to the gate, leave; the response runs on."""
    async with server.connect() as client:
        session_id = str((await client.ready())["session_id"])
        await client.send({"type": "user.message", "text": "a question", "id": "m1"})
        frames = await client.recv_until("user.message")
        if tool_first:
            frames += await client.recv_until("tool.result")
        for _ in BEFORE:
            frames += await client.recv_until("response.delta")
    await _left(server, session_id)
    assert not gate_opened(gate)
    return session_id, frames


async def _ended(live: LiveResponses, session_id: str) -> bool:
    return live.of_session(session_id) is None


def gate_opened(gate: Gate) -> bool:
    return gate._opened


async def _read_to_done(client: WsClient) -> list[Frame]:
    return await client.recv_until("response.done")


def _deltas(frames: list[Frame]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "response.delta")


async def test_a_resume_mid_answer_joins_it_live_with_the_whole_text_once(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate))
    session_id, _ = await _start_and_leave(server, fake_groq, gate)
    async with server.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
        gate.open()
        tail = await _read_to_done(client)
    live = ready["live_response"]
    assert live["text"] == "".join(BEFORE)
    assert live["response_id"] == tail[-1]["response_id"]
    assert live["text"] + _deltas(tail) == tail[-1]["text"] == WHOLE
    assert set(types_of(tail)) == {"response.delta", "response.done"}
    assert [e["type"] for e in ready["events"]] == ["user.message"]
    assert tail[-1]["status"] == "completed"


async def test_the_joined_client_sees_the_tool_calls_so_far_in_events(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(
        tool_call_reply(("get_current_time", {})),
        gated_reply(*BEFORE, after=AFTER, gate=gate),
    )
    session_id, _ = await _start_and_leave(server, fake_groq, gate, tool_first=True)
    async with server.connect(f"session_id={session_id}&after_seq=1") as client:
        ready = await client.ready()
        gate.open()
        tail = await _read_to_done(client)
    assert [e["type"] for e in ready["events"]] == ["tool.call", "tool.result"]
    assert ready["live_response"]["text"] + _deltas(tail) == tail[-1]["text"] == WHOLE
    assert tail[-1]["seq"] == 4


async def test_the_joined_client_cancels_the_response(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate))
    session_id, _ = await _start_and_leave(server, fake_groq, gate)
    async with server.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
        await client.send({"type": "response.cancel"})
        done = (await _read_to_done(client))[-1]
    await asyncio.to_thread(fake_groq.wait_for_disconnect)
    assert done["status"] == "cancelled"
    assert done["text"] == ready["live_response"]["text"] == "".join(BEFORE)


async def test_a_second_connection_while_the_joined_one_is_open_is_busy(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate), text_reply("next"))
    session_id, _ = await _start_and_leave(server, fake_groq, gate)
    async with server.connect(f"session_id={session_id}") as joined:
        await joined.ready()
        async with server.connect(f"session_id={session_id}") as second:
            refusal = await second.recv()
            close_code = await second.closed_with()
        gate.open()
        await _read_to_done(joined)
        # The joined connection is the session's connection now: it goes on talking.
        done = (await joined.ask("and next?", message_id="m2"))[-1]
    assert (refusal["code"], close_code) == ("session_busy", 4409)
    assert done["text"] == "next"


async def test_a_client_that_joins_and_leaves_again_leaves_a_stored_answer(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate))
    session_id, _ = await _start_and_leave(server, fake_groq, gate)
    async with server.connect(f"session_id={session_id}") as client:
        await client.ready()
    await _left(server, session_id)
    gate.open()
    live = server.app.state.runtime.hub.live_responses
    await wait_until(lambda: _ended(live, session_id), what="the response to end")
    async with server.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
    assert ready["live_response"] is None
    answer = ready["events"][-1]
    assert (answer["type"], answer["text"], answer["status"]) == (
        "assistant.message",
        WHOLE,
        "completed",
    )


async def test_a_resume_with_no_response_running_has_no_live_response(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("done already"))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.ask("hello", message_id="m1")
    async with server.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
    assert ready["live_response"] is None


async def test_a_dead_redis_neither_holds_up_an_answer_nor_a_join(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    # Nothing listens there: every publish fails, and is dropped instead of waited for.
    server = start_server(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate))
    session_id, _ = await _start_and_leave(server, fake_groq, gate)
    async with server.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
        gate.open()
        tail = await _read_to_done(client)
    metrics: list[str] = []

    async def dropped() -> bool:
        async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http:
            metrics.append((await http.get("/metrics")).text)
        return "chat_bus_dropped_frames_total 0.0" not in metrics[-1]

    await wait_until(dropped, what="the publisher to give up on the frames")
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http:
        readiness = await http.get("/readyz")
    # Redis down is no reason to take this instance out of the load balancer.
    assert readiness.status_code == 200, readiness.text
    assert ready["live_response"]["text"] + _deltas(tail) == tail[-1]["text"] == WHOLE
    assert 'chat_response_joins_total{where="local"} 1.0' in metrics[-1]
