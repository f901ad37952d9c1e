"""Protocol 1.1 double texting, on SQLite and PostgreSQL: a message sent while a response runs
is refused (the default), queued and answered in its turn (even with no client, even after a
restart), or interrupts the running response; the model always reads each message after the
answer to the one before it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.fakes.groq_server import (
    FakeGroq,
    Gate,
    ToolCallSpec,
    gated_reply,
    text_reply,
    tool_call_reply,
)
from tests.routers.conftest import BootServer, RestClient
from tests.support.client import Frame, WsClient, types_of
from tests.support.stored import assert_history_valid, chat_roles, ends_with, stored_events


async def ask_until_delta(client: WsClient, text: str = "first") -> list[Frame]:
    """Send a message; return its frames through the first `response.delta` (the answer is
    then held at its gate)."""
    await client.send({"type": "user.message", "text": text})
    return await client.recv_until("response.delta")


async def send_busy(client: WsClient, text: str, while_busy: str | None) -> Frame:
    """Send a message while a response runs; return the next frame."""
    frame: dict[str, Any] = {"type": "user.message", "text": text}
    if while_busy is not None:
        frame["while_busy"] = while_busy
    await client.send(frame)
    return await client.recv()


def roles_of(fake_groq: FakeGroq, request: int) -> list[str]:
    return chat_roles(fake_groq.requests[request].body["messages"])


def user_texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in events if e["type"] == "user.message"]


@pytest.mark.parametrize("while_busy", [None, "reject"])
async def test_a_message_while_busy_is_refused_by_default_and_with_reject(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq, while_busy: str | None
) -> None:
    server = boot()
    gate = Gate()
    fake_groq.script(gated_reply("Hel", after=["lo"], gate=gate))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await ask_until_delta(client)
        refused = await send_busy(client, "second", while_busy)
        gate.open()
        frames = await client.recv_until("response.done")
    assert refused["type"] == "error"
    assert (refused["code"], refused["retryable"]) == ("response_in_progress", False)
    assert types_of(frames) == ["response.delta", "response.done"]
    events = await stored_events(rest(server), session_id, ends_with("assistant.message"))
    assert user_texts(events) == ["first"]
    assert len(fake_groq.requests) == 1


async def test_enqueued_messages_are_acknowledged_at_once_and_answered_in_order(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    gate = Gate()
    fake_groq.script(
        gated_reply("Hel", after=["lo"], gate=gate), text_reply("Two."), text_reply("Three.")
    )
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        first = await ask_until_delta(client)
        second = await send_busy(client, "second", "enqueue")
        third = await send_busy(client, "third", "enqueue")
        gate.open()
        frames = await client.recv_until("response.done")
        frames += await client.recv_until("response.done")
        frames += await client.recv_until("response.done")
    for ack, text in ((second, "second"), (third, "third")):
        assert (ack["type"], ack["text"], ack["queued"]) == ("user.message", text, True)
    assert (second["seq"], third["seq"]) == (first[0]["seq"] + 1, first[0]["seq"] + 2)
    done = [f for f in frames if f["type"] == "response.done"]
    assert [d["text"] for d in done] == ["Hello", "Two.", "Three."]
    assert types_of(frames).count("response.started") == 2  # no more acks: sent already
    events = await stored_events(rest(server), session_id, ends_with("assistant.message", 3))
    assert types_of(events) == [
        "user.message",
        "user.message",
        "user.message",
        "assistant.message",
        "assistant.message",
        "assistant.message",
    ]
    assert [e.get("queued", False) for e in events[:3]] == [False, True, True]
    assert roles_of(fake_groq, 1) == ["system", "user:first", "assistant", "user:second"]
    assert roles_of(fake_groq, 2) == [
        "system",
        "user:first",
        "assistant",
        "user:second",
        "assistant",
        "user:third",
    ]


async def test_a_full_queue_refuses_one_more_and_stores_nothing(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot(max_queued_messages=2)
    gate = Gate()
    fake_groq.script(
        gated_reply("Hel", after=["lo"], gate=gate), text_reply("Two."), text_reply("Three.")
    )
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await ask_until_delta(client)
        acks = [await send_busy(client, text, "enqueue") for text in ("second", "third")]
        full = await send_busy(client, "fourth", "enqueue")
        gate.open()
        for _ in range(3):
            await client.recv_until("response.done")
    assert [a["queued"] for a in acks] == [True, True]
    assert full["type"] == "error"
    assert (full["code"], full["retryable"]) == ("queue_full", True)
    events = await stored_events(rest(server), session_id, ends_with("assistant.message", 3))
    assert user_texts(events) == ["first", "second", "third"]
    assert len(fake_groq.requests) == 3


async def test_queued_messages_are_answered_after_the_client_left(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    gate = Gate()
    fake_groq.script(
        gated_reply("Hel", after=["lo"], gate=gate), text_reply("Two."), text_reply("Three.")
    )
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await ask_until_delta(client)
        await send_busy(client, "second", "enqueue")
        await send_busy(client, "third", "enqueue")
    gate.open()  # the client is gone
    events = await stored_events(rest(server), session_id, ends_with("assistant.message", 3))
    assert [e["text"] for e in events if e["type"] == "assistant.message"] == [
        "Hello",
        "Two.",
        "Three.",
    ]
    assert roles_of(fake_groq, 2)[-3:] == ["user:second", "assistant", "user:third"]
    assert_history_valid(events)


async def test_queued_messages_survive_a_restart_and_are_answered_with_no_client(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    first = boot(shutdown_grace_s=0.5)
    gate = Gate()
    fake_groq.script(gated_reply("Hel", after=["lo"], gate=gate))
    async with first.connect() as client:
        session_id = (await client.ready())["session_id"]
        await ask_until_delta(client)
        await send_busy(client, "second", "enqueue")
        await send_busy(client, "third", "enqueue")
        await asyncio.to_thread(first.stop)  # the first answer is still held at the gate
    gate.open()
    fake_groq.script(text_reply("Two."), text_reply("Three."))
    second = boot()
    events = await stored_events(
        rest(second), session_id, ends_with("assistant.message", 3), timeout=10
    )
    answers = [e for e in events if e["type"] == "assistant.message"]
    assert [a["text"] for a in answers[1:]] == ["Two.", "Three."]
    assert answers[0]["text"].startswith("Hel")  # ended by the shutdown, its text kept
    assert user_texts(events) == ["first", "second", "third"]
    assert roles_of(fake_groq, 1)[-3:] == ["user:first", "assistant", "user:second"]
    assert roles_of(fake_groq, 2)[-3:] == ["user:second", "assistant", "user:third"]
    assert_history_valid(events)


async def test_an_interrupt_cancels_the_running_response_then_answers_the_new_message(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    gate = Gate()
    fake_groq.script(gated_reply("Hel", after=["lo"], gate=gate), text_reply("Sure."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        started = (await ask_until_delta(client))[1]
        await client.send({"type": "user.message", "text": "no, this", "while_busy": "interrupt"})
        frames = await client.recv_until("response.done")
        frames += await client.recv_until("response.done")
    gate.open()
    assert types_of(frames) == [
        "response.done",
        "user.message",
        "response.started",
        "response.delta",
        "response.done",
    ]
    cancelled, ack, done = frames[0], frames[1], frames[-1]
    assert (cancelled["response_id"], cancelled["status"]) == (started["response_id"], "cancelled")
    assert cancelled["text"] == "Hel"
    assert (ack["text"], ack.get("queued", False), ack["seq"]) == ("no, this", False, 3)
    assert (done["status"], done["text"]) == ("completed", "Sure.")
    events = await stored_events(rest(server), session_id, ends_with("assistant.message", 2))
    assert types_of(events) == [
        "user.message",
        "assistant.message",
        "user.message",
        "assistant.message",
    ]
    assert (events[1]["status"], events[1]["text"]) == ("cancelled", "Hel")
    assert roles_of(fake_groq, 1) == ["system", "user:first", "assistant", "user:no, this"]
    assert fake_groq.requests[1].body["messages"][2]["content"] == "Hel"


async def test_an_interrupt_denies_a_pending_approval_as_cancelled(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    call = ToolCallSpec("update_user_plan", {"user_id": "456", "plan": "team"}, id="call_team")
    fake_groq.script(tool_call_reply(call), text_reply("Never mind."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.send({"type": "user.message", "text": "put 456 on team"})
        await client.recv_until("tool.approval_requested")
        await client.send({"type": "user.message", "text": "forget it", "while_busy": "interrupt"})
        frames = await client.recv_until("response.done")
        frames += await client.recv_until("response.done")
    assert types_of(frames)[:5] == [
        "tool.result",
        "response.done",
        "user.message",
        "response.started",
        "response.delta",
    ]
    assert (frames[0]["ok"], frames[0]["error"]) == (False, "cancelled")
    assert frames[1]["status"] == "cancelled"
    assert frames[-1]["status"] == "completed"
    events = await stored_events(rest(server), session_id, ends_with("assistant.message", 2))
    assert_history_valid(events)
    assert roles_of(fake_groq, 1) == [
        "system",
        "user:put 456 on team",
        "assistant",
        "tool",
        "user:forget it",
    ]
    assert fake_groq.requests[1].body["messages"][3]["content"] == '{"error":"cancelled"}'


async def test_a_message_queued_during_an_approval_reaches_the_model_after_that_answer(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    server = boot()
    call = ToolCallSpec("update_user_plan", {"user_id": "456", "plan": "team"}, id="call_team")
    fake_groq.script(tool_call_reply(call), text_reply("Done."), text_reply("Yes."))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.send({"type": "user.message", "text": "put 456 on team"})
        await client.recv_until("tool.approval_requested")
        ack = await send_busy(client, "is it done?", "enqueue")
        await client.send({"type": "tool.approval", "call_id": "call_team", "approved": True})
        await client.recv_until("response.done")
        await client.recv_until("response.done")
    assert ack["queued"] is True
    events = await stored_events(rest(server), session_id, ends_with("assistant.message", 2))
    # Stored before the tool ran, read by the model after the answer.
    assert types_of(events).index("user.message", 1) < types_of(events).index("tool.result")
    assert roles_of(fake_groq, 2) == [
        "system",
        "user:put 456 on team",
        "assistant",
        "tool",
        "assistant",
        "user:is it done?",
    ]
    assert_history_valid(events)


async def test_messages_sent_while_an_approval_left_by_a_restart_waits(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    first = boot(shutdown_grace_s=0.5)  # the stop cancels what still runs sooner
    call = ToolCallSpec("update_user_plan", {"user_id": "456", "plan": "team"}, id="call_team")
    fake_groq.script(tool_call_reply(call))
    async with first.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.send({"type": "user.message", "text": "put 456 on team"})
        await client.recv_until("tool.approval_requested")
    await asyncio.to_thread(first.stop)
    second = boot()
    fake_groq.script(text_reply("Done."), text_reply("Yes."), text_reply("Stopped."))
    async with second.connect(f"session_id={session_id}") as client:
        await client.ready()
        queued = await send_busy(client, "is it done?", "enqueue")
        await client.send({"type": "tool.approval", "call_id": "call_team", "approved": True})
        frames = await client.recv_until("response.done")
        frames += await client.recv_until("response.done")
        stopped = await client.ask("thanks")
    assert queued["queued"] is True
    done = [f for f in frames if f["type"] == "response.done"]
    assert [d["text"] for d in done] == ["Done.", "Yes."]
    assert stopped[-1]["text"] == "Stopped."
    assert roles_of(fake_groq, 1) == ["system", "user:put 456 on team", "assistant", "tool"]
    assert roles_of(fake_groq, 2) == [
        "system",
        "user:put 456 on team",
        "assistant",
        "tool",
        "assistant",
        "user:is it done?",
    ]
    events = await stored_events(rest(second), session_id, ends_with("assistant.message", 4))
    assert_history_valid(events)


async def test_an_interrupt_ends_an_approval_left_by_a_restart(
    boot: BootServer, rest: RestClient, fake_groq: FakeGroq
) -> None:
    first = boot(shutdown_grace_s=0.5)  # the stop cancels what still runs sooner
    call = ToolCallSpec("update_user_plan", {"user_id": "456", "plan": "team"}, id="call_team")
    fake_groq.script(tool_call_reply(call))
    async with first.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.send({"type": "user.message", "text": "put 456 on team"})
        await client.recv_until("tool.approval_requested")
    await asyncio.to_thread(first.stop)
    second = boot()
    fake_groq.script(text_reply("Fine."))
    async with second.connect(f"session_id={session_id}") as client:
        await client.ready()
        await client.send({"type": "user.message", "text": "forget it", "while_busy": "interrupt"})
        frames = await client.recv_until("response.done")
        frames += await client.recv_until("response.done")
    assert types_of(frames) == [
        "response.started",
        "tool.result",
        "response.done",
        "user.message",
        "response.started",
        "response.delta",
        "response.done",
    ]
    assert (frames[1]["error"], frames[2]["status"]) == ("cancelled", "cancelled")
    assert roles_of(fake_groq, 1) == [
        "system",
        "user:put 456 on team",
        "assistant",
        "tool",
        "user:forget it",
    ]
    events = await stored_events(rest(second), session_id, ends_with("assistant.message", 3))
    assert_history_valid(events)
