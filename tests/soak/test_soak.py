"""A bounded soak: many concurrent sessions talking for a while, with zero errors, flat memory,
and every event stored exactly once. SOAK_SECONDS sets the length (the suite runs a short one;
docs/reliability.md records a 60-second run of 200 sessions)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.conftest import BACKGROUND_SUMMARY, BACKGROUND_SUMMARY_MODEL
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.client import WsClient
from tests.support.process import ServerProcess
from tests.support.waiting import wait_until

SESSIONS = int(os.environ.get("SOAK_SESSIONS", "200"))
SECONDS = float(os.environ.get("SOAK_SECONDS", "8"))
TOKENS = [f"t{i} " for i in range(20)]
# A person reads the answer before writing again: the load is many open, talking sessions.
THINK_S = 1.0


@dataclass
class Tally:
    exchanges: dict[str, int] = field(default_factory=dict)
    failures: list[object] = field(default_factory=list)


async def _talk(server: ServerProcess, deadline: float, tally: Tally) -> None:
    async with connect(server.ws_url, open_timeout=30) as connection:
        client = WsClient(connection)
        session_id = (await client.ready())["session_id"]
        tally.exchanges[session_id] = 0
        while time.monotonic() < deadline:
            message_id = f"m{tally.exchanges[session_id]}"
            await client.send({"type": "user.message", "text": "soak", "id": message_id})
            # Generous: on a loaded 2-core machine the client, the server and the fake upstream
            # share one process here; latency is the benchmark's business, not this test's.
            frames = await client.recv_until("response.done", timeout=60)
            _check(frames, tally)
            tally.exchanges[session_id] += 1
            await asyncio.sleep(THINK_S)  # the load's shape, not a wait for an event


def _check(frames: list[dict[str, object]], tally: Tally) -> None:
    done = frames[-1]
    text = "".join(str(f["text"]) for f in frames if f["type"] == "response.delta")
    if done["status"] != "completed" or text != "".join(TOKENS) or done["text"] != text:
        tally.failures.append(done)
    tally.failures.extend(f for f in frames if f["type"] == "error")


@pytest.mark.timeout(SECONDS + 120)
async def test_soak_many_sessions_zero_errors_flat_memory_events_once(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    fake_groq.answer_model("test-model", text_reply(*TOKENS, delay_s=0.01))
    fake_groq.answer_model(BACKGROUND_SUMMARY_MODEL, text_reply(BACKGROUND_SUMMARY))
    database = tmp_path / "app.db"
    server = ServerProcess(_env(fake_groq, database), tmp_path).start()
    tally = Tally()
    try:
        start = time.monotonic()
        warm = asyncio.create_task(_rss_after(server, SECONDS / 3))
        await asyncio.gather(*(_talk(server, start + SECONDS, tally) for _ in range(SESSIONS)))
        warm_rss, end_rss = await warm, server.rss_mib()
        await _assert_stored_once(database, tally)
    finally:
        server.stop()
    exchanges = sum(tally.exchanges.values())
    print(
        f"soak: {SESSIONS} sessions, {exchanges} exchanges in {SECONDS:g} s, server RSS "
        f"{warm_rss:.1f} MiB after warm-up, {end_rss:.1f} MiB at the end"
    )
    assert tally.failures == []
    assert len(tally.exchanges) == SESSIONS
    assert min(tally.exchanges.values()) >= 1
    # Memory stays flat once warm: growth of a few MiB at most (allocator noise).
    assert end_rss - warm_rss < 40, (warm_rss, end_rss)


def _env(fake: FakeGroq, database: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{database}",
        "LLM_PROVIDER": "groq",
        "GROQ_API_KEY": "test-key",
        "GROQ_BASE_URL": fake.base_url,
        "GROQ_MODEL": "test-model",
        "SUMMARY_MODEL": BACKGROUND_SUMMARY_MODEL,
        "LLM_MAX_RETRIES": "0",
        "MAX_MESSAGES_PER_MINUTE": "100000",
        "LOG_LEVEL": "WARNING",
    }


async def _rss_after(server: ServerProcess, seconds: float) -> float:
    await asyncio.sleep(seconds)  # a sampling point in a timed run, not a wait for an event
    return server.rss_mib()


async def _assert_stored_once(database: Path, tally: Tally) -> None:
    def read() -> dict[str, list[tuple[int, str]]]:
        with sqlite3.connect(database) as db:
            rows = db.execute(
                "select session_id, seq, type from session_events order by session_id, seq"
            ).fetchall()
        stored: dict[str, list[tuple[int, str]]] = {}
        for row in rows:
            stored.setdefault(row[0], []).append((row[1], row[2]))
        return stored

    # The writer flushes within WRITE_FLUSH_MS of the last answer; teardown flushes the rest.
    async def all_stored() -> bool:
        stored = await asyncio.to_thread(read)
        return all(len(stored.get(s, [])) == 2 * n for s, n in tally.exchanges.items())

    await wait_until(all_stored, 10, what="every exchange to be stored")
    stored = await asyncio.to_thread(read)
    for session_id, exchanges in tally.exchanges.items():
        rows = stored[session_id]
        assert [seq for seq, _ in rows] == list(range(1, 2 * exchanges + 1))
        assert [kind for _, kind in rows] == ["user.message", "assistant.message"] * exchanges
