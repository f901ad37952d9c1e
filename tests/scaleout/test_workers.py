"""`WORKERS=N` (`python -m app.serve`, `make run`): N server processes on one port, each an
instance on the shared PostgreSQL; conversations work whichever process takes them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from tests.fakes.groq_server import FakeGroq, text_reply
from tests.scaleout.conftest import StartInstance
from tests.support.client import WsClient
from tests.support.waiting import wait_until

READY_LINE = re.compile(r"ready: store=postgresql .* slot=(\d+)")


async def test_two_workers_serve_one_port_each_an_instance(
    start_instance: StartInstance, fake_groq: FakeGroq
) -> None:
    server = await asyncio.to_thread(start_instance, serve=True, WORKERS="2", LOG_LEVEL="INFO")

    async def both_ready() -> bool:
        return len(READY_LINE.findall(server.log.read_text())) >= 2

    await wait_until(both_ready, 20, what="both workers to be ready")
    slots = READY_LINE.findall(server.log.read_text())
    assert sorted(slots) == ["0", "1"]  # two processes, two instance slots

    fake_groq.script(*(text_reply(f"answer {n}") for n in range(4)))
    session_ids = []
    for n in range(4):
        client = WsClient(await connect(server.ws_url, open_timeout=10))
        session_ids.append((await client.ready())["session_id"])
        frames = await client.ask(f"question {n}")
        assert frames[-1]["text"] == f"answer {n}"
        await client.connection.close()
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        for session_id in session_ids:
            response = await http.get(f"/api/sessions/{session_id}")
            assert response.status_code == 200
        ready = (await http.get("/readyz")).json()
    assert ready["status"] == "ready"
    assert ready["instance"]["slot"] in (0, 1)


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a worker whose supervisor died is reaped by whoever adopts it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_workers_stop_when_their_supervisor_is_killed(
    start_instance: StartInstance,
) -> None:
    server = await asyncio.to_thread(start_instance, serve=True, WORKERS="2", LOG_LEVEL="INFO")

    async def both_ready() -> bool:
        return len(READY_LINE.findall(server.log.read_text())) >= 2

    await wait_until(both_ready, 20, what="both workers to be ready")
    workers = [pid for pid in _children(server.pid) if _running(pid)]
    assert len(workers) >= 2, workers

    os.kill(server.pid, signal.SIGKILL)  # no drain, no signal passed on: only the kernel knows

    async def workers_gone() -> bool:
        return not any(map(_running, workers))

    await wait_until(workers_gone, 20, what="the workers to stop with their supervisor")
