"""`tool_use_failed`: a tool call Groq could not parse is recovered once from its raw text."""

from __future__ import annotations

import orjson
import pytest

from app.services.llm.failed_generation import recover_tool_calls
from tests.fakes.groq_server import FakeGroq, error_reply, text_reply
from tests.support.client import types_of
from tests.support.server import RunningServer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '<function=fetch_user_profile{"user_id": "123"}</function>',
            [("fetch_user_profile", {"user_id": "123"})],
        ),
        (
            '<function=calculate>{"expression": "1+1"}</function> then '
            "<function=get_current_time{}</function>",
            [("calculate", {"expression": "1+1"}), ("get_current_time", {})],
        ),
        (
            '{"name": "fetch_user_profile", "arguments": {"user_id": "7"}}',
            [("fetch_user_profile", {"user_id": "7"})],
        ),
        (
            '[{"name": "calculate", "parameters": {"expression": "2"}}]',
            [("calculate", {"expression": "2"})],
        ),
        ("I think I should call a tool but I won't.", []),
        ("", []),
        ('{"name": 5, "arguments": {}}', []),
        (None, []),
    ],
)
def test_recovers_calls_only_from_call_shaped_text(
    text: str | None, expected: list[tuple[str, dict[str, object]]]
) -> None:
    calls = recover_tool_calls(text)
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == expected
    assert len({c.call_id for c in calls}) == len(calls)


async def test_a_recoverable_tool_use_failed_runs_the_call(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        error_reply(
            400,
            code="tool_use_failed",
            message="Failed to call a function.",
            failed_generation='<function=fetch_user_profile{"user_id": "123"}</function>',
        ),
        text_reply("It is Ada Lovelace."),
    )
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("Can you fetch the profile for user 123?")
    assert types_of(frames)[2:4] == ["tool.call", "tool.result"]
    assert frames[2]["name"] == "fetch_user_profile"
    assert frames[2]["arguments"] == {"user_id": "123"}
    assert frames[3]["ok"] is True
    assert frames[-1]["status"] == "completed"
    assert frames[-1]["text"] == "It is Ada Lovelace."


async def test_an_unrecoverable_tool_use_failed_fails_cleanly(
    server: RunningServer, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        error_reply(400, code="tool_use_failed", message="Failed.", failed_generation="gibberish"),
        text_reply("next time"),
    )
    async with server.connect() as client:
        await client.ready()
        done = (await client.ask("hello"))[-1]
        again = (await client.ask("again"))[-1]
    assert done["status"] == "failed"
    assert done["error"]["code"] == "llm_error"
    assert "tool_use_failed" in done["error"]["message"]
    assert again["status"] == "completed"
