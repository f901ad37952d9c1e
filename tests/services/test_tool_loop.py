"""The tool loop of a response: concurrency, failures answered to the model, limits, cancel."""

from __future__ import annotations

import asyncio

from pydantic import JsonValue

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.support.client import types_of
from tests.support.server import RunningServer


def _results(frames: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(f["name"]): f for f in frames if f["type"] == "tool.result"}


async def test_parallel_calls_of_a_round_run_concurrently(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    # Each tool waits for the other: run one after the other, they would both time out.
    meeting = asyncio.Barrier(2)

    async def meet_left() -> dict[str, JsonValue]:
        """Wait for meet_right."""
        await meeting.wait()
        return {"met": "left"}

    async def meet_right() -> dict[str, JsonValue]:
        """Wait for meet_left."""
        await meeting.wait()
        return {"met": "right"}

    server = start_server(tools=[meet_left, meet_right], tool_timeout_s=3)
    fake_groq.script(tool_call_reply(("meet_left", {}), ("meet_right", {})), text_reply("met"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("meet")
    assert types_of(frames)[2:4] == ["tool.call", "tool.call"]
    results = _results(frames)
    assert results["meet_left"]["ok"] is True
    assert results["meet_right"]["ok"] is True
    assert frames[-1]["status"] == "completed"


async def test_tool_failures_go_back_to_the_model_as_tool_errors(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(
            ("no_such_tool", {"x": 1}),
            ("fetch_user_profile", {"wrong_field": "123"}),
            ("calculate", "this is not json"),
            ("get_current_time", {"timezone": "Mars/Olympus"}),
        ),
        text_reply("sorry"),
    )
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("try things")
    calls = {f["name"]: f for f in frames if f["type"] == "tool.call"}
    results = _results(frames)
    assert all(result["ok"] is False for result in results.values())
    assert "unknown tool" in str(results["no_such_tool"]["error"])
    assert "invalid arguments" in str(results["fetch_user_profile"]["error"])
    assert "not a JSON object" in str(results["calculate"]["error"])
    assert "unknown time zone" in str(results["get_current_time"]["error"])
    assert calls["calculate"]["arguments"] == {}
    assert calls["calculate"]["raw_arguments"] == "this is not json"
    assert "raw_arguments" not in calls["fetch_user_profile"]
    assert all("result" not in result for result in results.values())
    assert frames[-1]["status"] == "completed"
    # The model got every error as the tool's answer, each call paired with its result.
    messages = fake_groq.requests[1].body["messages"]
    tool_messages = [m for m in messages if m["role"] == "tool"]
    assert len(tool_messages) == 4
    assert all("error" in m["content"] for m in tool_messages)


async def test_unknown_user_is_a_clean_tool_error(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "999"})), text_reply("no such user")
    )
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("profile of 999?")
    result = _results(frames)["fetch_user_profile"]
    assert result["ok"] is False
    assert result["error"] == "no user with id '999'"


async def test_numeric_user_id_is_accepted(server: RunningServer, fake_groq: FakeGroq) -> None:
    fake_groq.script(tool_call_reply(("fetch_user_profile", {"user_id": 123})), text_reply("found"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("profile of 123?")
    assert _results(frames)["fetch_user_profile"]["ok"] is True


async def test_fragmented_arguments_are_assembled(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(
            ("calculate", {"expression": "(12.5 * 4) / 2"}),
            ("fetch_user_profile", {"user_id": "456"}),
            fragmented=True,
        ),
        text_reply("25"),
    )
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("compute")
    results = _results(frames)
    assert results["calculate"]["result"] == {"expression": "(12.5 * 4) / 2", "result": "25"}
    assert results["fetch_user_profile"]["result"]["name"] == "Grace Hopper"  # type: ignore[index]


async def test_slow_tool_times_out_as_a_tool_error(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    async def wait_forever() -> dict[str, JsonValue]:
        """Never answers."""
        await asyncio.Event().wait()
        return {}

    server = start_server(tools=[wait_forever], tool_timeout_s=0.2)
    fake_groq.script(tool_call_reply(("wait_forever", {})), text_reply("gave up"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("wait")
    result = _results(frames)["wait_forever"]
    assert result["ok"] is False
    assert result["error"] == "timed out after 0.2 s"
    assert frames[-1]["status"] == "completed"


async def test_crashing_tool_is_a_tool_error_not_a_crash(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    async def explode() -> dict[str, JsonValue]:
        """Always fails."""
        raise RuntimeError("boom")

    server = start_server(tools=[explode])
    fake_groq.script(tool_call_reply(("explode", {})), text_reply("it broke"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("explode")
    result = _results(frames)["explode"]
    assert result["ok"] is False
    assert "RuntimeError" in str(result["error"])
    assert frames[-1]["status"] == "completed"


async def test_too_many_tool_rounds_fail_and_history_stays_valid(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server(max_tool_rounds=2)
    fake_groq.script(
        *[tool_call_reply(("calculate", {"expression": f"{i}+1"})) for i in range(3)],
        text_reply("fine"),
    )
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("loop")
        after = await client.ask("and now?")
    done = frames[-1]
    assert done["status"] == "failed"
    assert done["error"]["code"] == "tool_rounds_exceeded"
    assert len([f for f in frames if f["type"] == "tool.result"]) == 2
    assert not [f for f in frames if f["type"] == "error"]
    assert after[-1]["status"] == "completed"
    messages = fake_groq.requests[3].body["messages"]
    call_ids = [
        c["id"] for m in messages if m["role"] == "assistant" for c in m.get("tool_calls", [])
    ]
    answered = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert call_ids == answered


async def test_cancel_during_a_tool_cancels_it_and_stores_a_cancelled_result(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    started = asyncio.Event()

    async def long_task() -> dict[str, JsonValue]:
        """Runs until cancelled."""
        started.set()
        await asyncio.Event().wait()
        return {}

    server = start_server(tools=[long_task], tool_timeout_s=30)
    fake_groq.script(tool_call_reply(("long_task", {}), ("long_task", {})))
    async with server.connect() as client:
        session_id = (await client.ready())["session_id"]
        await client.send({"type": "user.message", "text": "run it"})
        await client.recv_until("tool.call")
        await client.recv_until("tool.call")
        await client.send({"type": "response.cancel"})
        frames = await client.recv_until("response.done")
    results = [f for f in frames if f["type"] == "tool.result"]
    assert [(r["ok"], r["error"]) for r in results] == [(False, "cancelled")] * 2
    assert frames[-1]["status"] == "cancelled"
    assert len(fake_groq.requests) == 1  # no model call after the cancel
    async with server.connect(f"session_id={session_id}") as client:
        events = (await client.ready())["events"]
    assert [e["type"] for e in events] == [
        "user.message",
        "tool.call",
        "tool.call",
        "tool.result",
        "tool.result",
        "assistant.message",
    ]
