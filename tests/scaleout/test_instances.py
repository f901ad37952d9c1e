"""Several instances on one PostgreSQL: any instance resumes any session, one live connection per
session across instances, a dead instance's sessions come free, each summary is made once."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
from websockets.asyncio.client import connect

from tests.fakes.groq_server import FakeGroq, stall_reply, text_reply
from tests.scaleout.conftest import CHAT_MODEL, SUMMARY, SUMMARY_MODEL, StartInstance
from tests.support.client import WsClient
from tests.support.process import ServerProcess
from tests.support.waiting import wait_until

SESSIONS = 50


async def _open(instance: ServerProcess, session_id: str | None = None) -> WsClient:
    url = instance.ws_url if session_id is None else f"{instance.ws_url}?session_id={session_id}"
    return WsClient(await connect(url))


async def _refusal(instance: ServerProcess, session_id: str) -> tuple[str, int | None]:
    client = await _open(instance, session_id)
    frame = await client.recv()
    return str(frame.get("code")), await client.closed_with()


async def test_a_session_resumes_on_the_other_instance(
    start_instance: StartInstance, fake_groq: FakeGroq
) -> None:
    first, second = start_instance(), start_instance()
    fake_groq.script(text_reply("one answer"), text_reply("two answer"))
    client = await _open(first)
    session_id = (await client.ready())["session_id"]
    assert (await client.ask("one", message_id="m1"))[-1]["status"] == "completed"
    await client.connection.close()
    # At once: the first instance may still be tearing down; the resume waits for it.
    resumed = await _open(second, session_id)
    ready = await resumed.ready()
    done = (await resumed.ask("two", message_id="m2"))[-1]
    await resumed.connection.close()
    assert ready["resumed"] is True
    assert [e["type"] for e in ready["events"]] == ["user.message", "assistant.message"]
    assert ready["events"][1]["text"] == "one answer"
    assert done["status"] == "completed"
    assert done["text"] == "two answer"
    # The second instance's model request carried the first instance's turn.
    chat = [r for r in fake_groq.requests if r.body.get("model") == CHAT_MODEL]
    assert "one answer" in str(chat[-1].body["messages"])


async def test_a_session_live_on_one_instance_is_busy_on_the_other(
    start_instance: StartInstance, fake_groq: FakeGroq
) -> None:
    first, second = start_instance(), start_instance()
    holder = await _open(first)
    session_id = (await holder.ready())["session_id"]
    # Stored (and its lease taken) with its first message.
    await holder.speak(lambda: fake_groq.script(text_reply("Hi.")))
    code, close_code = await _refusal(second, session_id)
    await holder.connection.close()
    assert (code, close_code) == ("session_busy", 4409)
    # Once the holder left, the other instance takes the session.
    resumed = await _open(second, session_id)
    assert (await resumed.ready())["session_id"] == session_id
    await resumed.connection.close()


async def test_after_kill_9_the_session_resumes_elsewhere_once_the_lease_expires(
    start_instance: StartInstance, fake_groq: FakeGroq
) -> None:
    doomed, survivor = start_instance(), start_instance()
    fake_groq.script(text_reply("first answer"), stall_reply("never finished"))
    client = await _open(doomed)
    session_id = (await client.ready())["session_id"]
    await client.ask("one", message_id="m1")
    await client.send({"type": "user.message", "text": "two", "id": "m2"})
    ack = await client.recv()
    await client.recv_until("response.delta")
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    # The dead instance's lease still stands: busy, until it expires (LEASE_TTL_S=2).
    assert await _refusal(survivor, session_id) == ("session_busy", 4409)
    ready = await _resume_when_free(survivor, session_id)
    assert ack["type"] == "user.message"
    events: list[dict[str, object]] = ready["events"]  # type: ignore[assignment]
    messages = [e.get("id") for e in events if e["type"] == "user.message"]
    assert messages == ["m1", "m2"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def _resume_when_free(instance: ServerProcess, session_id: str) -> dict[str, object]:
    ready: dict[str, object] = {}

    async def resumed() -> bool:
        client = await _open(instance, session_id)
        frame = await client.recv()
        if frame["type"] != "session.ready":
            await client.closed_with()
            return False
        ready.update(frame)
        await client.connection.close()
        return True

    await wait_until(resumed, 10, what="the dead instance's lease to expire")
    return ready


async def _chat_and_leave(instance: ServerProcess, number: int) -> str:
    client = await _open(instance)
    session_id = str((await client.ready())["session_id"])
    done = (await client.ask(f"question #{number}#"))[-1]
    assert done["status"] == "completed"
    await client.connection.close()
    return session_id


async def test_sessions_ended_at_once_on_both_instances_are_each_summarized_once(
    start_instance: StartInstance, fake_groq: FakeGroq, shared_database: str
) -> None:
    fake_groq.answer_model(CHAT_MODEL, text_reply("hello"))
    first, second = start_instance(), start_instance()
    session_ids = await asyncio.gather(
        *[_chat_and_leave((first, second)[n % 2], n) for n in range(SESSIONS)]
    )
    await wait_until(lambda: _all_summarized(shared_database), 30, what=f"{SESSIONS} summaries")
    summaries = [r for r in fake_groq.background_requests if r.body.get("model") == SUMMARY_MODEL]
    per_session = {
        session_id: sum(f"question #{n}#" in str(r.body["messages"]) for r in summaries)
        for n, session_id in enumerate(session_ids)
    }
    assert sorted(set(per_session.values())) == [1]
    assert len(summaries) == SESSIONS


async def _all_summarized(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("select summary_status, summary from sessions")
    finally:
        await conn.close()
    return len(rows) == SESSIONS and all(r["summary"] == SUMMARY for r in rows)
