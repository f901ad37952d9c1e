"""Tokens per model request over a long session, with and without the context budget.

Runs the real server against the fake Groq for N turns (one tool turn in ten) and prints the
estimated prompt tokens of the requests at a few points. Not part of the test suite:
    .venv/bin/python -m bench.context_tokens
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from app.services.context import request_tokens
from app.services.tools import DEFAULT_TOOLS
from app.settings import Settings
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.support.server import RunningServer

TURNS = 200
CHECKPOINTS = (10, 50, 100, 150, 200)


async def _run_session(fake: FakeGroq, server: RunningServer) -> list[int]:
    for turn in range(TURNS):
        if turn % 10 == 3:
            fake.script(tool_call_reply(("calculate", {"expression": f"{turn}*2"})))
        fake.script(
            text_reply(f"Answer {turn}: ", "a reply of about a dozen words, like real ones.")
        )
    async with server.connect() as client:
        await client.ready()
        for turn in range(TURNS):
            await client.ask(f"Turn {turn}: a question of a realistic length, about twenty words.")
    chat = [r for r in fake.requests if r.body.get("model") == "bench-model"]
    tools = chat[0].body["tools"]
    # The last request of each turn (after its tool round, if any).
    per_turn: list[int] = []
    for request in chat:
        if request.body["messages"][-1]["role"] == "user":
            per_turn.append(request_tokens(request.body["messages"], tools))
    return per_turn


async def _measure(budget: int | None) -> list[int]:
    with tempfile.TemporaryDirectory() as folder, FakeGroq() as fake:
        fake.answer_model("bench-summary", text_reply("Rolling summary of the earlier turns."))
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{Path(folder) / 'bench.db'}",
            groq_api_key="bench",
            groq_base_url=fake.base_url,
            groq_model="bench-model",
            summary_model="bench-summary",
            context_max_tokens=budget,
            max_messages_per_minute=10_000,
            llm_max_retries=0,
        )
        server = RunningServer(settings, tools=DEFAULT_TOOLS).start()
        try:
            return await _run_session(fake, server)
        finally:
            server.stop()


async def main() -> None:
    without = await _measure(None)
    with_budget = await _measure(2000)
    print("turn | prompt tokens, no budget | prompt tokens, CONTEXT_MAX_TOKENS=2000")
    for turn in CHECKPOINTS:
        print(f"{turn:4d} | {without[turn - 1]:24d} | {with_budget[turn - 1]:6d}")


if __name__ == "__main__":
    asyncio.run(main())
