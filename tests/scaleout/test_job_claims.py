"""Summary jobs across instances: a claim that went stale, or that a newer request replaced,
cannot overwrite the newer outcome when its slow model call finally returns."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
import httpx
from websockets.asyncio.client import connect

from tests.fakes.groq_server import FakeGroq, hold_reply, text_reply
from tests.scaleout.conftest import StartInstance
from tests.support.client import WsClient
from tests.support.process import ServerProcess
from tests.support.waiting import wait_until

# Not answered by the fixture's standing reply: each summary here is scripted.
SCRIPTED_SUMMARY_MODEL = "scripted-summary-model"
LATE = ["A ", "late ", "summary ", "of ", "the ", "first ", "turn."]
LATE_DELAY_S = 0.6  # the slow instance's summary takes about 4 s
NEWER = "The newer summary."
_OUTCOME = re.compile(r'^chat_summaries_total\{outcome="([a-z]+)"\} ([0-9.]+)$', re.MULTILINE)


async def _chat_and_leave(instance: ServerProcess, text: str, session_id: str = "") -> str:
    url = f"{instance.ws_url}?session_id={session_id}" if session_id else instance.ws_url
    async with connect(url) as connection:
        client = WsClient(connection)
        ready = await client.ready()
        assert (await client.ask(text))[-1]["status"] == "completed"
    return str(ready["session_id"])


async def _outcomes(instance: ServerProcess) -> dict[str, float]:
    """The summaries this instance finished, by outcome (from its metrics)."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        text = (await http.get(f"http://127.0.0.1:{instance.port}/metrics")).text
    return {outcome: float(count) for outcome, count in _OUTCOME.findall(text)}


async def _slow_summary_ends(instance: ServerProcess) -> dict[str, float]:
    outcomes: dict[str, float] = {}

    async def ended() -> bool:
        outcomes.update(await _outcomes(instance))
        return sum(outcomes.values()) >= 1

    await wait_until(ended, 15, what="the slow instance's summary to end")
    return outcomes


async def _session_row(dsn: str, session_id: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        row = await conn.fetchrow(
            "select summary, summary_status, summary_seq, summary_claim from sessions "
            "where id = $1",
            session_id,
        )
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


async def test_a_stale_claims_late_summary_does_not_replace_the_one_that_took_it_over(
    start_instance: StartInstance, fake_groq: FakeGroq, shared_database: str
) -> None:
    timers = {"SUMMARY_MODEL": SCRIPTED_SUMMARY_MODEL, "SUMMARY_CLAIM_TIMEOUT_S": "1"}
    slow = start_instance(**timers)
    start_instance(**timers)  # the instance that takes the job over
    fake_groq.script(
        text_reply("an answer"), hold_reply(*LATE, delay_s=LATE_DELAY_S), text_reply(NEWER)
    )
    session_id = await _chat_and_leave(slow, "a question")
    # The slow instance's claim goes stale while its model still writes; the other instance
    # takes the job over and finishes it first.
    await wait_until(
        lambda: _summary_is(shared_database, session_id, NEWER), 10, what="the takeover"
    )
    outcomes = await _slow_summary_ends(slow)
    row = await _session_row(shared_database, session_id)
    assert (row["summary"], row["summary_status"], row["summary_seq"]) == (NEWER, "done", 2)
    assert outcomes == {"superseded": 1.0}
    assert row["summary_claim"] is None
    assert len(fake_groq.requests) == 3


async def test_a_summary_of_fewer_events_returning_late_leaves_the_newer_one(
    start_instance: StartInstance, fake_groq: FakeGroq, shared_database: str
) -> None:
    slow, other = (start_instance(SUMMARY_MODEL=SCRIPTED_SUMMARY_MODEL) for _ in range(2))
    fake_groq.script(
        text_reply("first answer"),
        hold_reply(*LATE, delay_s=LATE_DELAY_S),
        text_reply("second answer"),
        text_reply(NEWER),
    )
    session_id = await _chat_and_leave(slow, "first question")
    await asyncio.to_thread(fake_groq.wait_for_requests, 2)  # the slow summary runs
    # The session goes on elsewhere: its summary is asked for again, and made there first.
    await _chat_and_leave(other, "second question", session_id)
    await wait_until(
        lambda: _summary_is(shared_database, session_id, NEWER), 10, what="the newer summary"
    )
    outcomes = await _slow_summary_ends(slow)
    row = await _session_row(shared_database, session_id)
    # It covers all four events; the late one, of the first two, did not move it back.
    assert (row["summary"], row["summary_status"], row["summary_seq"]) == (NEWER, "done", 4)
    assert outcomes == {"superseded": 1.0}


async def _summary_is(dsn: str, session_id: str, summary: str) -> bool:
    stored: str | None = (await _session_row(dsn, session_id))["summary"]
    return stored == summary
