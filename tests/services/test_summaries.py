"""End-of-session summaries, through a real server, the fake Groq and the SQLite file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.conftest import BACKGROUND_SUMMARY, StartServer
from tests.fakes.groq_server import (
    FakeGroq,
    RecordedRequest,
    error_reply,
    hold_reply,
    stall_reply,
    text_reply,
)
from tests.support.logs import Records, captured_logs
from tests.support.rest import Json, get_session, wait_for_session
from tests.support.server import RunningServer
from tests.support.stall import stalled
from tests.support.waiting import wait_until

SUMMARY_MODEL = "summary-under-test"
TITLE_MODEL = "title-under-test"

FIRST_QUESTION = "Tell me about the alpha project"
FIRST_ANSWER = "Alpha ships in May."
FIRST_SUMMARY = "The user asked about alpha; it ships in May."
SECOND_QUESTION = "And what about the beta project?"
SECOND_ANSWER = "Beta ships in June."
SECOND_SUMMARY = "The user asked about alpha and beta; they ship in May and June."


@asynccontextmanager
async def rest(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=5, trust_env=False) as client:
        yield client


async def chat_and_leave(server: RunningServer, question: str, session_id: str = "") -> str:
    """Ask one question (in a new session, or resuming `session_id`), then disconnect."""
    async with server.connect(f"session_id={session_id}" if session_id else "") as client:
        ready = await client.ready()
        done = (await client.ask(question))[-1]
    assert done["status"] == "completed", done
    new_id: str = ready["session_id"]
    return new_id


async def summary_settles(server: RunningServer, session_id: str, status: str = "done") -> Json:
    async with rest(server) as http:
        return await wait_for_session(
            http, session_id, lambda s: s["summary_status"] == status, what=f"summary {status}"
        )


def words_of(text: str) -> list[str]:
    """`text` as streamed tokens, each word with its following space."""
    return [word + " " for word in text.split(" ")]


def summary_requests(fake_groq: FakeGroq) -> list[RecordedRequest]:
    return [r for r in fake_groq.requests if r.body.get("model") == SUMMARY_MODEL]


def prompt_of(request: RecordedRequest) -> str:
    return "\n".join(str(message.get("content")) for message in request.body["messages"])


def summary_row(path: str, session_id: str) -> tuple[str, str | None]:
    db = sqlite3.connect(path)
    try:
        row = db.execute(
            "select summary_status, summary from sessions where id = ?", (session_id,)
        ).fetchone()
    finally:
        db.close()
    return row[0], row[1]


async def test_leaving_makes_a_summary_with_the_summary_model(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(summary_model=SUMMARY_MODEL)
    fake_groq.script(text_reply(FIRST_ANSWER), text_reply(FIRST_SUMMARY))
    session_id = await chat_and_leave(server, FIRST_QUESTION)

    session = await summary_settles(server, session_id)
    assert session["summary"] == FIRST_SUMMARY
    [request] = summary_requests(fake_groq)
    assert FIRST_QUESTION in prompt_of(request)
    assert FIRST_ANSWER in prompt_of(request)
    assert [r.body["model"] for r in fake_groq.requests] == ["test-model", SUMMARY_MODEL]
    assert summary_row(server.settings.sqlite_path(), session_id) == ("done", FIRST_SUMMARY)


async def test_a_resumed_session_is_summarized_again_from_the_previous_summary(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(summary_model=SUMMARY_MODEL)
    fake_groq.script(
        text_reply(FIRST_ANSWER),
        text_reply(FIRST_SUMMARY),
        text_reply(SECOND_ANSWER),
        # Slow enough that the second round's running state is seen over REST.
        hold_reply(*words_of(SECOND_SUMMARY), delay_s=0.03),
    )
    session_id = await chat_and_leave(server, FIRST_QUESTION)
    assert (await summary_settles(server, session_id))["summary"] == FIRST_SUMMARY

    await chat_and_leave(server, SECOND_QUESTION, session_id)
    async with rest(server) as http:
        await wait_for_session(
            http,
            session_id,
            lambda s: s["summary_status"] in {"pending", "running"},
            what="the summary to be redone",
        )
    session = await summary_settles(server, session_id)
    assert session["summary"] == SECOND_SUMMARY

    first, second = summary_requests(fake_groq)
    prompt = prompt_of(second)
    assert FIRST_SUMMARY in prompt
    assert SECOND_QUESTION in prompt
    assert SECOND_ANSWER in prompt
    assert FIRST_QUESTION not in prompt
    assert FIRST_ANSWER not in prompt
    assert FIRST_QUESTION in prompt_of(first)


def job_row(path: str, session_id: str, kind: str) -> tuple[str, int, str | None]:
    """A job's status, attempts so far and next try (`kind`: summary or title)."""
    assert kind in {"summary", "title"}
    db = sqlite3.connect(path)
    try:
        row = db.execute(
            f"select {kind}_status, {kind}_attempts, {kind}_retry_at from sessions where id = ?",
            (session_id,),
        ).fetchone()
    finally:
        db.close()
    return row[0], row[1], row[2]


async def job_gives_up(path: str, session_id: str, kind: str) -> None:
    """Wait until the job failed for good: five tries, no retry due."""

    async def given_up() -> bool:
        return job_row(path, session_id, kind) == ("failed", MAX_TRIES, None)

    try:
        await wait_until(given_up, 10, what=f"the {kind} to fail for good")
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {job_row(path, session_id, kind)}") from e


MODEL_DOWN = error_reply(503, code="service_unavailable", message="the model is down")
MAX_TRIES = 5


async def test_a_summary_that_failed_while_the_model_was_down_is_retried_and_done(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(summary_model=SUMMARY_MODEL, summary_retry_s=0.05)
    fake_groq.script(text_reply(FIRST_ANSWER), MODEL_DOWN, MODEL_DOWN, text_reply(FIRST_SUMMARY))
    session_id = await chat_and_leave(server, FIRST_QUESTION)
    session = await summary_settles(server, session_id)
    assert session["summary"] == FIRST_SUMMARY
    assert len(summary_requests(fake_groq)) == 3
    # The failures are forgotten once it is done: the next summary has its five tries again.
    assert job_row(server.settings.sqlite_path(), session_id, "summary") == ("done", 0, None)


async def test_a_summary_whose_model_keeps_failing_ends_failed_after_five_tries(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(summary_model=SUMMARY_MODEL, summary_retry_s=0.05)
    fake_groq.answer_model(SUMMARY_MODEL, MODEL_DOWN)
    fake_groq.script(text_reply(FIRST_ANSWER))
    session_id = await chat_and_leave(server, FIRST_QUESTION)
    await job_gives_up(server.settings.sqlite_path(), session_id, "summary")
    tries = [r for r in fake_groq.background_requests if r.body.get("model") == SUMMARY_MODEL]
    assert len(tries) == MAX_TRIES
    async with rest(server) as http:
        session = await get_session(http, session_id)
    assert (session["summary_status"], session["summary"]) == ("failed", None)


async def test_a_title_whose_model_keeps_failing_ends_failed_after_five_tries(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(title_model=TITLE_MODEL, summary_retry_s=0.05)
    fake_groq.answer_model(TITLE_MODEL, MODEL_DOWN)
    fake_groq.script(text_reply(FIRST_ANSWER))
    session_id = await chat_and_leave(server, FIRST_QUESTION)
    await job_gives_up(server.settings.sqlite_path(), session_id, "title")
    tries = [r for r in fake_groq.background_requests if r.body.get("model") == TITLE_MODEL]
    assert len(tries) == MAX_TRIES
    # Every try was made from the first exchange, also those made after it was handed on.
    assert all(FIRST_QUESTION in prompt_of(request) for request in tries)
    async with rest(server) as http:
        assert (await get_session(http, session_id))["title"] is None


async def test_a_title_whose_claim_the_store_did_not_answer_is_made_later(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(title_model=TITLE_MODEL, summary_retry_s=0.05, database_timeout_s=0.3)
    fake_groq.answer_model(TITLE_MODEL, text_reply("Alpha plans"))
    fake_groq.script(hold_reply(*words_of(FIRST_ANSWER), delay_s=0.05))
    with captured_logs(logging.WARNING) as logs:
        session_id = await _ask_while_the_store_stalls_at_the_end(server, logs)
    async with rest(server) as http:
        session = await wait_for_session(
            http, session_id, lambda s: s["title"] is not None, what="the title"
        )
    assert session["title"] == "Alpha plans"


async def _ask_while_the_store_stalls_at_the_end(server: RunningServer, logs: Records) -> str:
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.send({"type": "user.message", "text": FIRST_QUESTION, "id": "q1"})
        await client.recv_until("response.delta")
        with stalled(server):
            await client.recv_until("response.done")

            async def claim_failed() -> bool:
                return any("could not claim the title" in m for m in logs.messages())

            await wait_until(claim_failed, what="the title's claim to fail on the locked store")
    return str(session_id)


@pytest.mark.parametrize("left_as", ["pending", "running"])
async def test_a_summary_left_unfinished_by_a_stopped_process_is_made_at_the_next_start(
    start_server: StartServer, fake_groq: FakeGroq, left_as: str
) -> None:
    first = start_server()
    fake_groq.script(text_reply(FIRST_ANSWER))
    session_id = await chat_and_leave(first, FIRST_QUESTION)
    # The first process summarizes with the background model; wait so that nothing runs later.
    assert (await summary_settles(first, session_id))["summary"] == BACKGROUND_SUMMARY
    first.stop()

    path = first.settings.sqlite_path()
    db = sqlite3.connect(path)
    try:
        with db:  # as if the process had stopped before the summary was made
            db.execute(
                "update sessions set summary_status = ?, summary = null, summary_seq = 0 "
                "where id = ?",
                (left_as, session_id),
            )
    finally:
        db.close()

    fake_groq.script(text_reply(FIRST_SUMMARY))
    second = start_server(summary_model=SUMMARY_MODEL)
    assert second.settings.database_url == first.settings.database_url
    session = await summary_settles(second, session_id)
    assert session["summary"] == FIRST_SUMMARY
    [request] = summary_requests(fake_groq)
    assert FIRST_QUESTION in prompt_of(request)


async def test_a_summary_cut_off_by_shutdown_is_finished_by_the_next_process(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    first = start_server(summary_model=SUMMARY_MODEL, shutdown_grace_s=0.0)
    fake_groq.script(text_reply(FIRST_ANSWER), stall_reply())
    session_id = await chat_and_leave(first, FIRST_QUESTION)
    await asyncio.to_thread(fake_groq.wait_for_requests, 2)
    first.stop()  # cancels the summary that the model never answers
    path = first.settings.sqlite_path()
    status, summary = summary_row(path, session_id)
    assert status in {"pending", "running"}
    assert summary is None

    fake_groq.script(text_reply(FIRST_SUMMARY))
    second = start_server(summary_model=SUMMARY_MODEL)
    session = await summary_settles(second, session_id)
    assert session["summary"] == FIRST_SUMMARY
    assert summary_row(path, session_id) == ("done", FIRST_SUMMARY)
    assert len(summary_requests(fake_groq)) == 2
