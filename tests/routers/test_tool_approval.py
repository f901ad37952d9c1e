"""Protocol 1.1 tool approval, on SQLite and PostgreSQL: a call that needs the person's answer
is announced and waits; approved it runs, denied (or timed out, or cancelled) the model reads
why; a pending approval outlives its connection and the process."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.fakes.groq_server import FakeGroq, ToolCallSpec, text_reply, tool_call_reply
from tests.routers.conftest import BootServer, RestClient
from tests.support.approval_client import answer, ask_until_approval, settled, tool_messages
from tests.support.client import types_of
from tests.support.rest import get_session
from tests.support.stored import (
    assert_history_valid,
    ends_with,
    plan_of,
    stored_events,
)

# Grace Hopper (456) is on the free plan in the demo profiles; Ada Lovelace (123) on pro.
TEAM_456 = ToolCallSpec("update_user_plan", {"user_id": "456", "plan": "team"}, id="call_team")
FREE_123 = ToolCallSpec("update_user_plan", {"user_id": "123", "plan": "free"}, id="call_free")


async def test_an_approval_request_follows_its_call_is_stored_and_the_tool_waits(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    fake_groq.script(tool_call_reply(TEAM_456), text_reply("Done."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        frames = await ask_until_approval(client)
        assert types_of(frames) == [
            "user.message",
            "response.started",
            "tool.call",
            "tool.approval_requested",
        ]
        call, requested = frames[2], frames[3]
        assert requested == {
            "type": "tool.approval_requested",
            "seq": call["seq"] + 1,
            "response_id": frames[1]["response_id"],
            "call_id": "call_team",
            "name": "update_user_plan",
            "arguments": {"user_id": "456", "plan": "team"},
            "expires_at": requested["expires_at"],
            "created_at": requested["created_at"],
        }
        expires_in = datetime.fromisoformat(requested["expires_at"]) - datetime.now(UTC)
        assert 590 < expires_in.total_seconds() <= 600  # TOOL_APPROVAL_TIMEOUT_S's default
        events = await stored_events(rest(server), session_id, ends_with("tool.approval_requested"))
        assert events[-1] == requested
        assert await plan_of(server, "456") == "free"  # not run
        await settled(client)
        assert len(fake_groq.requests) == 1  # the model waits too
        assert (await answer(client, "call_team", approved=True))["type"] == "tool.approval"
        await client.recv_until("response.done")


async def test_an_approved_call_is_acknowledged_then_runs(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    fake_groq.script(tool_call_reply(TEAM_456), text_reply("Done."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        requested = (await ask_until_approval(client))[-1]
        ack = await answer(client, "call_team", approved=True)
        frames = await client.recv_until("response.done")
    assert ack == {
        "type": "tool.approval",
        "seq": requested["seq"] + 1,
        "response_id": requested["response_id"],
        "call_id": "call_team",
        "approved": True,
        "reason": None,
        "created_at": ack["created_at"],
    }
    assert types_of(frames) == ["tool.result", "response.delta", "response.done"]
    result = frames[0]
    assert (result["seq"], result["ok"]) == (ack["seq"] + 1, True)
    assert result["result"] == {"user_id": "456", "plan": "team", "previous_plan": "free"}
    assert frames[-1]["status"] == "completed"
    assert await plan_of(server, "456") == "team"
    events = await stored_events(rest(server), session_id, ends_with("assistant.message"))
    assert types_of(events) == [
        "user.message",
        "tool.call",
        "tool.approval_requested",
        "tool.approval",
        "tool.result",
        "assistant.message",
    ]
    assert events[3] == ack
    assert tool_messages(fake_groq, 1) == [
        {
            "role": "tool",
            "tool_call_id": "call_team",
            "content": '{"user_id":"456","plan":"team","previous_plan":"free"}',
        }
    ]


@pytest.mark.parametrize(
    ("reason", "error"),
    [(None, "denied by the user"), ("too expensive", "denied by the user: too expensive")],
)
async def test_a_denied_call_does_not_run_and_the_model_reads_why(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq, reason: str | None, error: str
) -> None:
    server = boot()
    fake_groq.script(tool_call_reply(TEAM_456), text_reply("As you wish."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await ask_until_approval(client)
        ack = await answer(client, "call_team", approved=False, reason=reason)
        frames = await client.recv_until("response.done")
    assert (ack["type"], ack["approved"], ack["reason"]) == ("tool.approval", False, reason)
    result = frames[0]
    assert result["type"] == "tool.result"
    assert (result["ok"], result["error"]) == (False, error)
    assert "result" not in result
    assert frames[-1]["status"] == "completed"
    assert await plan_of(server, "456") == "free"
    assert tool_messages(fake_groq, 1) == [
        {"role": "tool", "tool_call_id": "call_team", "content": f'{{"error":"{error}"}}'}
    ]
    events = await stored_events(rest(server), session_id, ends_with("assistant.message"))
    assert events[3] == ack
    assert events[4] == result


async def test_answers_for_calls_not_pending_are_refused_and_a_repeat_is_acknowledged_again(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    fake_groq.script(tool_call_reply(TEAM_456), text_reply("Done."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await ask_until_approval(client)
        unknown = await answer(client, "call_nobody", approved=True)
        ack = await answer(client, "call_team", approved=True, reason="fine")
        await client.recv_until("response.done")
        http = rest(server)
        before = await stored_events(http, session_id, ends_with("assistant.message"))
        changed = await answer(client, "call_team", approved=False)
        changed_reason = await answer(client, "call_team", approved=True)
        again = await answer(client, "call_team", approved=True, reason="fine")
        await settled(client)
    for refused in (unknown, changed, changed_reason):
        assert refused["type"] == "error", refused
        assert (refused["code"], refused["retryable"]) == ("approval_not_pending", False)
    assert again == ack  # the stored event, the same seq
    assert await stored_events(http, session_id) == before  # nothing stored
    assert len(fake_groq.requests) == 2


async def test_while_an_approval_is_pending_the_response_is_in_progress_and_can_be_cancelled(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    fake_groq.script(tool_call_reply(TEAM_456))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        started = (await ask_until_approval(client))[1]
        await client.send({"type": "user.message", "text": "and another thing"})
        busy = await client.recv()
        await client.send({"type": "response.cancel"})
        frames = await client.recv_until("response.done")
        late = await answer(client, "call_team", approved=True)
    assert (busy["type"], busy["code"]) == ("error", "response_in_progress")
    assert types_of(frames) == ["tool.result", "response.done"]
    result, done = frames
    assert (result["call_id"], result["ok"], result["error"]) == ("call_team", False, "cancelled")
    assert (done["response_id"], done["status"]) == (started["response_id"], "cancelled")
    assert done["finish_reason"] == "cancelled"
    assert (late["type"], late["code"]) == ("error", "approval_not_pending")
    events = await stored_events(rest(server), session_id, ends_with("assistant.message"))
    assert types_of(events) == [
        "user.message",
        "tool.call",
        "tool.approval_requested",
        "tool.result",
        "assistant.message",
    ]
    assert events[-1]["status"] == "cancelled"
    assert await plan_of(server, "456") == "free"


async def test_tools_require_approval_names_tools_by_glob(
    boot: BootServer, fake_groq: FakeGroq
) -> None:
    server = boot(tools_require_approval=["calc*"])
    fake_groq.script(
        tool_call_reply(
            ToolCallSpec("calculate", {"expression": "6 * 7"}, id="call_calc"),
            ToolCallSpec("get_current_time", {"timezone": "UTC"}, id="call_time"),
        ),
        text_reply("42"),
    )
    async with server.connect() as client:
        await client.ready()
        frames = await ask_until_approval(client, "six times seven, and the time")
        await settled(client)  # nothing more: the whole round waits for the answer
        ack = await answer(client, "call_calc", approved=True)
        rest_of_it = await client.recv_until("response.done")
    requested = [f for f in frames if f["type"] == "tool.approval_requested"]
    assert [f["call_id"] for f in requested] == ["call_calc"]  # get_current_time matches not
    assert ack["type"] == "tool.approval"
    results = {f["call_id"]: f for f in rest_of_it if f["type"] == "tool.result"}
    assert results["call_calc"]["result"] == {"expression": "6 * 7", "result": "42"}
    assert results["call_time"]["ok"] is True


async def test_an_unanswered_approval_times_out_and_the_model_goes_on(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot(tool_approval_timeout_s=1)
    fake_groq.script(tool_call_reply(TEAM_456), text_reply("It timed out."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        requested = (await ask_until_approval(client))[-1]
        frames = await client.recv_until("response.done")
        late = await answer(client, "call_team", approved=True)
    expires_in = datetime.fromisoformat(requested["expires_at"]) - datetime.now(UTC)
    assert expires_in.total_seconds() <= 0
    assert types_of(frames) == ["tool.result", "response.delta", "response.done"]
    assert (frames[0]["ok"], frames[0]["error"]) == (False, "approval timed out")
    assert frames[-1]["status"] == "completed"
    assert (late["type"], late["code"]) == ("error", "approval_not_pending")
    assert tool_messages(fake_groq, 1)[0]["content"] == '{"error":"approval timed out"}'
    events = await stored_events(rest(server), session_id, ends_with("assistant.message"))
    assert "tool.approval" not in types_of(events)
    assert await plan_of(server, "456") == "free"


async def test_a_pending_approval_outlives_its_connection_and_can_be_answered_after_a_resume(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    fake_groq.script(tool_call_reply(TEAM_456), text_reply("Done."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        frames = await ask_until_approval(client)
    async with server.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
        ack = await answer(client, "call_team", approved=True)
        rest_of_it = await client.recv_until("response.done")
    assert ready["events"][-1] == frames[-1]  # the stored approval request
    assert ready["pending_approvals"] == ["call_team"]
    assert ready["live_response"] == {"response_id": frames[1]["response_id"], "text": ""}
    assert ack["type"] == "tool.approval"
    assert types_of(rest_of_it) == ["tool.result", "response.delta", "response.done"]
    assert rest_of_it[-1]["response_id"] == frames[1]["response_id"]  # the same response
    assert rest_of_it[0]["ok"] is True
    assert await plan_of(server, "456") == "team"
    events = await stored_events(rest(server), session_id, ends_with("assistant.message"))
    assert_history_valid(events)


async def test_a_pending_approval_left_alone_times_out_with_nobody_connected(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot(tool_approval_timeout_s=1)
    fake_groq.script(tool_call_reply(TEAM_456), text_reply("Nobody answered."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await ask_until_approval(client)
    events = await stored_events(rest(server), session_id, ends_with("assistant.message"))
    async with server.connect(f"session_id={session_id}") as client:
        ready = await client.ready()
    assert types_of(events) == [
        "user.message",
        "tool.call",
        "tool.approval_requested",
        "tool.result",
        "assistant.message",
    ]
    assert (events[3]["ok"], events[3]["error"]) == (False, "approval timed out")
    assert events[4]["text"] == "Nobody answered."
    assert ready["events"] == events
    assert (ready["pending_approvals"], ready["live_response"]) == ([], None)
    assert tool_messages(fake_groq, 1)[0]["content"] == '{"error":"approval timed out"}'


async def test_the_calls_of_a_round_run_once_every_approval_is_answered(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    fake_groq.script(tool_call_reply(TEAM_456, FREE_123), text_reply("One of two."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.send({"type": "user.message", "text": "change both"})
        frames = await client.recv_until("tool.approval_requested")
        frames += await client.recv_until("tool.approval_requested")
        first = await answer(client, "call_team", approved=True)
        await settled(client)  # no tool.result came
        assert await plan_of(server, "456") == "free"
        second = await answer(client, "call_free", approved=False, reason="not Ada")
        rest_of_it = await client.recv_until("response.done")
    assert types_of(frames)[2:] == [
        "tool.call",
        "tool.call",
        "tool.approval_requested",
        "tool.approval_requested",
    ]
    assert (first["type"], second["type"]) == ("tool.approval", "tool.approval")
    results = {f["call_id"]: f for f in rest_of_it if f["type"] == "tool.result"}
    assert results["call_team"]["ok"] is True
    assert results["call_free"]["error"] == "denied by the user: not Ada"
    assert (await plan_of(server, "456"), await plan_of(server, "123")) == ("team", "pro")
    events = await stored_events(rest(server), session_id, ends_with("assistant.message"))
    assert_history_valid(events)


async def test_the_session_lists_pending_approvals_and_counts_queued_messages(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    http = rest(server)
    fake_groq.script(tool_call_reply(TEAM_456), text_reply("Done."), text_reply("Queued one."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await ask_until_approval(client)
        pending = await get_session(http, session_id)
        await client.send({"type": "user.message", "text": "later", "while_busy": "enqueue"})
        queued_ack = await client.recv()
        queued = await get_session(http, session_id)
        await answer(client, "call_team", approved=True)
        await client.recv_until("response.done")
        await client.recv_until("response.done")
        after = await get_session(http, session_id)
    assert (pending["pending_approvals"], pending["queue_length"]) == (["call_team"], 0)
    assert queued_ack["queued"] is True
    assert (queued["pending_approvals"], queued["queue_length"]) == (["call_team"], 1)
    assert (after["pending_approvals"], after["queue_length"]) == ([], 0)
