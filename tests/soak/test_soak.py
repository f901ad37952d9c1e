"""Many concurrent sessions against a server process: zero errors, every exchange stored
exactly once. Behaviour only: the timed soak with its memory bound is `make soak`
(`bench/soak.py`, docs/reliability.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes.groq_server import FakeGroq
from tests.soak.conversations import (
    Tally,
    answer_every_message,
    assert_stored_once,
    server_env,
    talk,
)
from tests.support.process import ServerProcess

SESSIONS = 200
EXCHANGES = 2


async def test_many_concurrent_sessions_zero_errors_every_exchange_stored_once(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    answer_every_message(fake_groq, delay_s=0.01)
    database = tmp_path / "app.db"
    server = ServerProcess(server_env(fake_groq, database), tmp_path).start()
    tally = Tally()
    try:
        sessions = (
            talk(server.ws_url, tally, more=lambda done: done < EXCHANGES) for _ in range(SESSIONS)
        )
        await asyncio.gather(*sessions)
        await assert_stored_once(database, tally)
    finally:
        server.stop()
    assert tally.failures == []
    assert sorted(tally.exchanges.values()) == [EXCHANGES] * SESSIONS
