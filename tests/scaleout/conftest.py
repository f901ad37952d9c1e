"""Two server processes on one throwaway PostgreSQL database (without one, skipped in a plain
local run, failed where every test must run), with the fake Groq answering chat, summary and
title requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.database.conftest import throwaway_database
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.process import ServerProcess

CHAT_MODEL = "test-model"
SUMMARY_MODEL = "scaleout-summary-model"
TITLE_MODEL = "scaleout-title-model"
SUMMARY = "A summary made once."

StartInstance = Callable[..., ServerProcess]


@pytest.fixture
def shared_database() -> Iterator[str]:
    """An empty PostgreSQL database both instances use (the first to start migrates it)."""
    yield from throwaway_database("scaleout")


@pytest.fixture
def start_instance(
    shared_database: str, fake_groq: FakeGroq, tmp_path: Path
) -> Iterator[StartInstance]:
    """Start one more server process on the shared database; all are killed at the end."""
    fake_groq.answer_model(SUMMARY_MODEL, text_reply(SUMMARY))
    fake_groq.answer_model(TITLE_MODEL, text_reply("A title"))
    started: list[ServerProcess] = []

    def start(*, serve: bool = False, **env: str) -> ServerProcess:
        settings = {
            "DATABASE_URL": shared_database,
            "LLM_PROVIDER": "groq",
            "GROQ_API_KEY": "test-key",
            "GROQ_BASE_URL": fake_groq.base_url,
            "GROQ_MODEL": CHAT_MODEL,
            "SUMMARY_MODEL": SUMMARY_MODEL,
            "TITLE_MODEL": TITLE_MODEL,
            "LLM_MAX_RETRIES": "0",
            "RESUME_WAIT_S": "10",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        instance = ServerProcess(settings, tmp_path, serve=serve)
        started.append(instance)
        return instance.start()

    yield start
    for instance in started:
        instance.stop()
