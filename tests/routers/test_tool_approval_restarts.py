"""Tool approval across a server restart (protocol 1.1): a pending approval outlives the
process; its answer, its expiry or a cancel starts a new response that closes the round and lets
the model go on. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tests.fakes.groq_server import FakeGroq, ToolCallSpec, text_reply, tool_call_reply
from tests.routers.conftest import BootServer, RestClient
from tests.support.approval_client import answer, ask_until_approval
from tests.support.client import types_of
from tests.support.rest import get_session
from tests.support.stored import (
    assert_history_valid,
    chat_roles,
    ends_with,
    plan_of,
    stored_events,
)

# Grace Hopper (456) is on the free plan in the demo profiles; Ada Lovelace (123) on pro.
TEAM_456 = ToolCallSpec("update_user_plan", {"user_id": "456", "plan": "team"}, id="call_team")
FREE_123 = ToolCallSpec("update_user_plan", {"user_id": "123", "plan": "free"}, id="call_free")


@pytest.mark.parametrize("approved", [True, False])
async def test_a_pending_approval_outlives_the_process_and_its_answer_starts_a_new_response(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq, approved: bool
) -> None:
    first = boot(shutdown_grace_s=0.5)  # the stop cancels what still runs sooner
    fake_groq.script(tool_call_reply(TEAM_456))
    async with first.connect() as client:
        session_id = (await client.ready())["session_id"]
        frames = await ask_until_approval(client)
    await asyncio.to_thread(first.stop)
    second = boot()
    before = await get_session(rest(second), session_id)  # from the log: the call still waits
    fake_groq.script(text_reply("After the restart."))
    async with second.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
        ack = await answer(client, "call_team", approved=approved)
        resumed = await client.recv_until("response.done")
    assert (before["pending_approvals"], before["status"]) == (["call_team"], "idle")
    assert ready["pending_approvals"] == ["call_team"]
    assert ready["live_response"] is None
    assert frames[-1] in ready["events"]
    assert (ack["type"], ack["response_id"]) == ("tool.approval", frames[1]["response_id"])
    assert types_of(resumed) == [
        "response.started",
        "tool.result",
        "response.delta",
        "response.done",
    ]
    new_id = resumed[0]["response_id"]
    assert new_id != frames[1]["response_id"]
    result, done = resumed[1], resumed[-1]
    assert (result["response_id"], result["call_id"], result["ok"]) == (
        new_id,
        "call_team",
        approved,
    )
    assert (done["response_id"], done["status"]) == (new_id, "completed")
    assert await plan_of(second, "456") == ("team" if approved else "free")
    events = await stored_events(rest(second), session_id, ends_with("assistant.message", 2))
    assert_history_valid(events)
    # The model's request after the restart: the call, then its result, then nothing else.
    messages = fake_groq.requests[-1].body["messages"]
    assert chat_roles(messages) == ["system", "user:put 456 on team", "assistant", "tool"]
    assert messages[2]["tool_calls"][0]["id"] == "call_team"
    assert messages[3]["tool_call_id"] == "call_team"
    expected = "team" if approved else '"error":"denied by the user"'
    assert expected in messages[3]["content"]


async def test_an_approval_a_stopped_process_left_expires_and_the_model_goes_on(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    # Long enough for the first process to stop before the call expires.
    first = boot(tool_approval_timeout_s=3, shutdown_grace_s=0.5)
    fake_groq.script(tool_call_reply(TEAM_456))
    async with first.connect() as client:
        session_id = (await client.ready())["session_id"]
        requested = (await ask_until_approval(client))[-1]
    await asyncio.to_thread(first.stop)
    second = boot()
    http = rest(second)
    left = await stored_events(http, session_id)
    assert "tool.result" not in types_of(left)  # still pending when the process stopped
    assert left[-1]["finish_reason"] == "awaiting_approval"
    await wait_until_past(datetime.fromisoformat(requested["expires_at"]))
    assert (await get_session(http, session_id))["pending_approvals"] == []
    fake_groq.script(text_reply("It timed out."))
    async with second.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
        frames = await client.recv_until("response.done")
        late = await answer(client, "call_team", approved=True)
    assert ready["pending_approvals"] == []
    assert types_of(frames) == [
        "response.started",
        "tool.result",
        "response.delta",
        "response.done",
    ]
    assert (frames[1]["ok"], frames[1]["error"]) == (False, "approval timed out")
    assert (late["type"], late["code"]) == ("error", "approval_not_pending")
    events = await stored_events(http, session_id, ends_with("assistant.message", 2))
    assert_history_valid(events)
    assert await plan_of(second, "456") == "free"


async def test_a_cancel_ends_an_approval_a_stopped_process_left(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    first = boot(shutdown_grace_s=0.5)  # the stop cancels what still runs sooner
    fake_groq.script(tool_call_reply(TEAM_456))
    async with first.connect() as client:
        session_id = (await client.ready())["session_id"]
        await ask_until_approval(client)
    await asyncio.to_thread(first.stop)
    second = boot()
    async with second.connect(f"session_id={session_id}") as client:
        await client.ready()
        await client.send({"type": "user.message", "text": "meanwhile"})
        busy = await client.recv()
        await client.send({"type": "response.cancel"})
        frames = await client.recv_until("response.done")
    assert (busy["type"], busy["code"]) == ("error", "response_in_progress")
    assert types_of(frames) == ["response.started", "tool.result", "response.done"]
    assert (frames[1]["ok"], frames[1]["error"]) == (False, "cancelled")
    assert frames[-1]["status"] == "cancelled"
    events = await stored_events(rest(second), session_id, ends_with("assistant.message", 2))
    assert_history_valid(events)
    assert "meanwhile" not in [e.get("text") for e in events]


async def wait_until_past(moment: datetime) -> None:
    """Sleep until `moment` has passed (an expiry the test waits out)."""
    await asyncio.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0) + 0.05)
