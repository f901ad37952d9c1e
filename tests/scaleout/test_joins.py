"""Joining a running response from another instance through Redis (PROTOCOL.md, "Joining a
running response"; docs/deployment.md): two and three server processes on one PostgreSQL, the
answer held mid-way by the fake Groq's gate, so "mid-answer" is a state, not a moment."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.fakes.groq_server import FakeGroq, Gate, gated_reply, text_reply, tool_call_reply
from tests.scaleout.conftest import StartInstance
from tests.support.client import Frame, WsClient
from tests.support.private_redis import PrivateRedis, private_redis, shared_redis_url
from tests.support.process import ServerProcess
from tests.support.ui_stream import (
    UIStream,
    assert_well_formed,
    chat_body,
    read_ui_stream,
    user_message,
)
from tests.support.waiting import wait_until

BEFORE = ("Half ", "of it, ")
AFTER = ("then ", "the rest.")
WHOLE = "".join(BEFORE + AFTER)
CLIENTS = 50
TOKEN = "x" * 4000
TOKENS = 1500  # 6 MB: far more than the socket buffers between a reader and its instance hold


@pytest.fixture
def redis_url() -> str:
    return shared_redis_url()


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


async def _start(start_instance: StartInstance, count: int, redis_url: str) -> list[ServerProcess]:
    """Start server processes one after the other, off the event loop (a start is a fork and
    a wait)."""
    return [await asyncio.to_thread(start_instance, REDIS_URL=redis_url) for _ in range(count)]


async def _open(instance: ServerProcess, session_id: str | None = None) -> WsClient:
    url = instance.ws_url if session_id is None else f"{instance.ws_url}?session_id={session_id}"
    return WsClient(await connect(url, open_timeout=10))


async def _ask_and_leave(instance: ServerProcess, *, message_id: str = "m1") -> str:
    """Ask on `instance`, read the answer up to the gate, leave (the answer runs on there)."""
    client = await _open(instance)
    session_id = str((await client.ready())["session_id"])
    await client.send({"type": "user.message", "text": "a question", "id": message_id})
    await client.recv_until("user.message")
    for _ in BEFORE:
        await client.recv_until("response.delta")
    await client.connection.close()
    return session_id


async def _join(instance: ServerProcess, session_id: str) -> tuple[WsClient, Frame]:
    client = await _open(instance, session_id)
    ready = await client.ready()
    return client, ready


async def _open_unread(instance: ServerProcess, session_id: str) -> WsClient:
    """A client with a 4 KB receive buffer: while the test does not read it, it reads nothing
    (its library stops reading the socket after one frame)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", instance.port))
    url = f"{instance.ws_url}?session_id={session_id}"
    return WsClient(
        await connect(url, sock=sock, max_queue=1, max_size=None, compression=None, open_timeout=10)
    )


async def _metric_line(instance: ServerProcess, line: str) -> bool:
    async with httpx.AsyncClient(base_url=instance.http_url, timeout=5, trust_env=False) as http:
        return line in (await http.get("/metrics")).text


def _text(ready: Frame, tail: list[Frame]) -> str:
    live = ready["live_response"]["text"] if ready["live_response"] else ""
    return live + "".join(f["text"] for f in tail if f["type"] == "response.delta")


async def test_a_resume_on_another_instance_joins_the_answer_live_and_goes_on_there(
    start_instance: StartInstance, fake_groq: FakeGroq, redis_url: str
) -> None:
    running, other = await _start(start_instance, 2, redis_url)
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate), text_reply("second answer"))
    session_id = await _ask_and_leave(running)
    client, ready = await _join(other, session_id)
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        view = (await http.get(f"http://127.0.0.1:{other.port}/api/sessions/{session_id}")).json()
    gate.open()
    tail = await client.recv_until("response.done")
    # The lease passed to the instance holding the connection: the next turn is answered there.
    second = (await client.ask("and then?", message_id="m2"))[-1]
    await client.connection.close()
    assert ready["live_response"]["text"] == "".join(BEFORE)
    assert _text(ready, tail) == tail[-1]["text"] == WHOLE
    assert tail[-1]["status"] == "completed"
    assert [e["type"] for e in ready["events"]] == ["user.message"]
    assert (second["status"], second["text"]) == ("completed", "second answer")
    assert view["status"] == "active"


async def test_tool_events_before_and_after_a_remote_join_reach_the_client_once(
    start_instance: StartInstance, fake_groq: FakeGroq, redis_url: str
) -> None:
    running, other = await _start(start_instance, 2, redis_url)
    gate = Gate()
    # A tool round, then a round that says half its text and is held before its own tool call.
    later_call = tool_call_reply(("calculate", {"expression": "6*7"}), text_before=BEFORE)
    fake_groq.script(
        tool_call_reply(("get_current_time", {})),
        replace(later_call, gate=gate, gate_at=len(BEFORE)),
        text_reply(*AFTER),
    )
    client = await _open(running)
    session_id = str((await client.ready())["session_id"])
    await client.send({"type": "user.message", "text": "a question", "id": "m1"})
    await client.recv_until("tool.result")
    for _ in BEFORE:
        await client.recv_until("response.delta")
    await client.connection.close()
    joined, ready = await _join(other, session_id)
    gate.open()
    tail = await joined.recv_until("response.done")
    await joined.connection.close()
    seen = [e for e in ready["events"] if e["type"] != "user.message"] + [
        f for f in tail if f["type"] in ("tool.call", "tool.result")
    ]
    assert [(e["type"], e["name"], e["seq"]) for e in seen] == [
        ("tool.call", "get_current_time", 2),
        ("tool.result", "get_current_time", 3),
        ("tool.call", "calculate", 4),
        ("tool.result", "calculate", 5),
    ]
    assert _text(ready, tail) == tail[-1]["text"] == WHOLE
    assert tail[-1]["seq"] == 6


async def test_cancel_from_the_joined_instance_cancels_the_answer_where_it_runs(
    start_instance: StartInstance, fake_groq: FakeGroq, redis_url: str
) -> None:
    running, other = await _start(start_instance, 2, redis_url)
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate))
    session_id = await _ask_and_leave(running)
    client, ready = await _join(other, session_id)
    await client.send({"type": "response.cancel"})
    done = (await client.recv_until("response.done"))[-1]
    await client.connection.close()
    await asyncio.to_thread(fake_groq.wait_for_disconnect)  # the upstream request was closed
    assert done["status"] == "cancelled"
    assert done["text"] == ready["live_response"]["text"] == "".join(BEFORE)


async def test_a_second_connection_on_a_third_instance_is_busy_while_one_is_joined(
    start_instance: StartInstance, fake_groq: FakeGroq, redis_url: str
) -> None:
    running, joined_on, third = await _start(start_instance, 3, redis_url)
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate))
    session_id = await _ask_and_leave(running)
    client, ready = await _join(joined_on, session_id)
    refused = await _open(third, session_id)
    refusal = await refused.recv()
    close_code = await refused.closed_with()
    again = await _open(running, session_id)  # the instance running it refuses too
    refusal_there = await again.recv()
    await again.closed_with()
    gate.open()
    tail = await client.recv_until("response.done")
    await client.connection.close()
    assert (refusal["code"], close_code) == ("session_busy", 4409)
    assert refusal_there["code"] == "session_busy"
    assert _text(ready, tail) == WHOLE


async def test_redis_stopped_mid_answer_the_joined_client_gets_the_stored_result_then_recovers(
    start_instance: StartInstance, fake_groq: FakeGroq, own_redis: PrivateRedis
) -> None:
    running, other = await _start(start_instance, 2, own_redis.url)
    gate, later = Gate(), Gate()
    fake_groq.script(
        gated_reply(*BEFORE, after=AFTER, gate=gate), gated_reply(*BEFORE, after=AFTER, gate=later)
    )
    session_id = await _ask_and_leave(running)
    client, ready = await _join(other, session_id)
    await asyncio.to_thread(own_redis.stop)
    gate.open()
    tail = await client.recv_until("response.done", timeout=20)
    # Redis is back: the next answer is joined live again, the other way round.
    await asyncio.to_thread(own_redis.start)
    await client.send({"type": "user.message", "text": "again", "id": "m2"})
    await client.recv_until("user.message")
    for _ in BEFORE:
        await client.recv_until("response.delta")
    await client.connection.close()
    rejoined, ready_again = await _join(running, session_id)
    later.open()
    tail_again = await rejoined.recv_until("response.done")
    await rejoined.connection.close()
    assert _text(ready, tail) == tail[-1]["text"] == WHOLE
    assert tail[-1]["status"] == "completed"
    assert ready_again["live_response"] is not None
    assert _text(ready_again, tail_again) == tail_again[-1]["text"] == WHOLE


async def test_a_resume_elsewhere_while_redis_is_down_waits_for_the_stored_answer(
    start_instance: StartInstance, fake_groq: FakeGroq, own_redis: PrivateRedis
) -> None:
    running, other = await _start(start_instance, 2, own_redis.url)
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate), text_reply("second answer"))
    session_id = await _ask_and_leave(running)
    await asyncio.to_thread(own_redis.stop)
    client = await _open(other, session_id)
    fell_back = 'chat_response_joins_total{where="fallback"} 1.0'
    await wait_until(lambda: _metric_line(other, fell_back), what="the join to fall back")
    gate.open()
    ready = await client.recv(timeout=15)  # once the answer ended on the running instance
    second = (await client.ask("and then?", message_id="m2"))[-1]
    await client.connection.close()
    assert ready["type"] == "session.ready", ready
    assert ready["live_response"] is None
    assert [e["type"] for e in ready["events"]] == ["user.message", "assistant.message"]
    answer = ready["events"][-1]
    assert (answer["status"], answer["text"]) == ("completed", WHOLE)
    assert (second["status"], second["text"]) == ("completed", "second answer")


async def test_a_joined_client_that_reads_nothing_never_slows_the_answer_where_it_runs(
    start_instance: StartInstance, fake_groq: FakeGroq, redis_url: str
) -> None:
    # The joined instance would drop the reader after 60 s: far beyond the wait for the answer.
    running = await asyncio.to_thread(start_instance, REDIS_URL=redis_url)
    other = await asyncio.to_thread(start_instance, REDIS_URL=redis_url, WS_SEND_TIMEOUT_S="60")
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=[TOKEN] * TOKENS, gate=gate))
    session_id = await _ask_and_leave(running)
    reader = await _open_unread(other, session_id)
    ready = await reader.ready()
    gate.open()
    events: list[Frame] = []
    async with httpx.AsyncClient(base_url=running.http_url, timeout=10, trust_env=False) as http:

        async def stored() -> bool:
            response = await http.get(f"/api/sessions/{session_id}/events")
            events[:] = response.json()["events"]
            return len(events) == 2

        # The answer (6 MB) is stored whole while the joined client has read nothing of it.
        await wait_until(stored, 20, what="the answer to be stored while the reader reads nothing")
    tail = await reader.recv_until("response.done", timeout=60)
    await reader.connection.close()
    whole = "".join(BEFORE) + TOKEN * TOKENS
    assert (events[1]["status"], events[1]["text"]) == ("completed", whole)
    # Read at last, the joined client gets the whole answer once.
    assert _text(ready, tail) == tail[-1]["text"] == whole


async def test_the_running_instance_killed_the_joined_client_gets_a_clean_failed_end(
    start_instance: StartInstance, fake_groq: FakeGroq, redis_url: str
) -> None:
    doomed, survivor = await _start(start_instance, 2, redis_url)
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate), text_reply("after the crash"))
    session_id = await _ask_and_leave(doomed)
    client, ready = await _join(survivor, session_id)
    doomed.signal(signal.SIGKILL)
    await asyncio.to_thread(doomed.wait)
    done = (await client.recv_until("response.done", timeout=20))[-1]
    next_answer = (await client.ask("still there?", message_id="m2"))[-1]
    await client.connection.close()
    gate.open()
    assert (done["status"], done["error"]["code"]) == ("failed", "internal_error")
    assert done["text"] == ready["live_response"]["text"] == "".join(BEFORE)
    assert next_answer["text"] == "after the crash"


async def test_fifty_clients_join_fifty_running_answers_on_the_other_instance(
    start_instance: StartInstance, fake_groq: FakeGroq, redis_url: str
) -> None:
    running, other = await _start(start_instance, 2, redis_url)
    gate = Gate()
    fake_groq.script(*[gated_reply(*BEFORE, after=AFTER, gate=gate) for _ in range(CLIENTS)])
    session_ids = await asyncio.gather(*[_ask_and_leave(running) for _ in range(CLIENTS)])
    joined = await asyncio.gather(*[_join(other, session_id) for session_id in session_ids])
    gate.open()
    tails = await asyncio.gather(
        *[client.recv_until("response.done", timeout=20) for client, _ in joined]
    )
    for client, _ in joined:
        await client.connection.close()
    texts = [_text(ready, tail) for (_, ready), tail in zip(joined, tails, strict=True)]
    assert texts == [WHOLE] * CLIENTS
    assert all(tail[-1]["text"] == WHOLE for tail in tails)


async def test_use_chat_resume_on_another_instance_replays_the_answer_then_follows_it(
    start_instance: StartInstance, fake_groq: FakeGroq, redis_url: str
) -> None:
    """The AI SDK's resume (`GET /api/chat/{id}/stream`) uses the same join: a reload that
    lands on another instance gets the whole answer once, from its `start`."""
    running, other = await _start(start_instance, 2, redis_url)
    gate = Gate()
    fake_groq.script(gated_reply(*BEFORE, after=AFTER, gate=gate))
    body = chat_body("reloadedChat", user_message("a question", "m1"))
    async with (
        httpx.AsyncClient(base_url=running.http_url, timeout=10) as http,
        http.stream("POST", "/api/chat", json=body) as response,
    ):
        first = await read_ui_stream(response, until="text-delta")
    replay = UIStream()
    async with (
        httpx.AsyncClient(base_url=other.http_url, timeout=10) as http,
        http.stream("GET", "/api/chat/reloadedChat/stream") as response,
    ):
        reading = asyncio.ensure_future(read_ui_stream(response, into=replay))

        async def replayed() -> bool:
            return "text-delta" in replay.types()

        await wait_until(replayed, what="the replay of the answer so far")
        gate.open()
        await reading

    assert_well_formed(replay)
    assert replay.first("start")["messageId"] == first.first("start")["messageId"]
    assert replay.text() == WHOLE
