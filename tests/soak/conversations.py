"""Many sessions talking at once to a server process, and what must hold afterwards: zero
errors, every exchange stored exactly once with gapless seqs. Shared by the suite's short run
(`test_soak.py`) and the timed soak of `make soak` (`bench/soak.py`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import connect

from tests.conftest import BACKGROUND_SUMMARY, BACKGROUND_SUMMARY_MODEL
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.client import WsClient
from tests.support.waiting import wait_until

TOKENS = [f"t{i} " for i in range(20)]
ANSWER_MODEL = "test-model"


@dataclass
class Tally:
    """Exchanges per session, and every frame that was not what it should have been."""

    exchanges: dict[str, int] = field(default_factory=dict)
    failures: list[object] = field(default_factory=list)


def answer_every_message(fake: FakeGroq, *, delay_s: float) -> None:
    """The fake answers every chat and summary request, with `delay_s` between tokens."""
    fake.answer_model(ANSWER_MODEL, text_reply(*TOKENS, delay_s=delay_s))
    fake.answer_model(BACKGROUND_SUMMARY_MODEL, text_reply(BACKGROUND_SUMMARY))


def server_env(fake: FakeGroq, database: Path) -> dict[str, str]:
    """A server process on `database`, answered by `fake`, that does not rate-limit the load."""
    return {
        "DATABASE_URL": f"sqlite:///{database}",
        "LLM_PROVIDER": "groq",
        "GROQ_API_KEY": "test-key",
        "GROQ_BASE_URL": fake.base_url,
        "GROQ_MODEL": ANSWER_MODEL,
        "SUMMARY_MODEL": BACKGROUND_SUMMARY_MODEL,
        "LLM_MAX_RETRIES": "0",
        "MAX_MESSAGES_PER_MINUTE": "100000",
        "LOG_LEVEL": "WARNING",
    }


async def talk(
    ws_url: str, tally: Tally, *, more: Callable[[int], bool], think_s: float = 0.0
) -> None:
    """One session: a message and its whole answer while `more(exchanges so far)`, each
    followed by `think_s` of reading."""
    async with connect(ws_url, open_timeout=30) as connection:
        client = WsClient(connection)
        session_id = (await client.ready())["session_id"]
        tally.exchanges[session_id] = 0
        while more(tally.exchanges[session_id]):
            await _exchange(client, f"m{tally.exchanges[session_id]}", tally)
            tally.exchanges[session_id] += 1
            if think_s:
                await asyncio.sleep(think_s)  # the load's shape, not a wait for an event


async def _exchange(client: WsClient, message_id: str, tally: Tally) -> None:
    await client.send({"type": "user.message", "text": "soak", "id": message_id})
    # Generous: on a loaded 2-core machine the client, the server and the fake upstream share
    # the CPU; latency is the benchmark's business, not this check's.
    _check(await client.recv_until("response.done", timeout=60), tally)


def _check(frames: list[dict[str, object]], tally: Tally) -> None:
    done = frames[-1]
    text = "".join(str(f["text"]) for f in frames if f["type"] == "response.delta")
    if done["status"] != "completed" or text != "".join(TOKENS) or done["text"] != text:
        tally.failures.append(done)
    tally.failures.extend(f for f in frames if f["type"] == "error")


def _stored(database: Path) -> dict[str, list[tuple[int, str]]]:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "select session_id, seq, type from session_events order by session_id, seq"
        ).fetchall()
    stored: dict[str, list[tuple[int, str]]] = {}
    for session_id, seq, kind in rows:
        stored.setdefault(session_id, []).append((seq, kind))
    return stored


async def assert_stored_once(database: Path, tally: Tally) -> None:
    """Every exchange of `tally` is in `database` exactly once, in order, with gapless seqs."""

    # The writer flushes within WRITE_FLUSH_MS of the last answer.
    async def all_stored() -> bool:
        stored = await asyncio.to_thread(_stored, database)
        return all(len(stored.get(s, [])) == 2 * n for s, n in tally.exchanges.items())

    await wait_until(all_stored, 10, what="every exchange to be stored")
    stored = await asyncio.to_thread(_stored, database)
    for session_id, exchanges in tally.exchanges.items():
        rows = stored[session_id]
        assert [seq for seq, _ in rows] == list(range(1, 2 * exchanges + 1))
        assert [kind for _, kind in rows] == ["user.message", "assistant.message"] * exchanges
