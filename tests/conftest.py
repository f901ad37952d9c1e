"""Fixtures: the fake Groq, a real server per test, and guards that make mistakes loud."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from app.services.tools import DEFAULT_TOOLS, ToolFunction
from app.settings import Settings
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.server import RunningServer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

# The guards (tests/support/guard_plugin.py) fail any test that tries a real network call,
# blocks an event loop or leaks a task, and any skip where every test must run (`NO_SKIPS`);
# pytester runs the guards' own tests.
pytest_plugins = ("pytester", "tests.support.guard_plugin")


StartServer = Callable[..., RunningServer]


BACKGROUND_SUMMARY_MODEL = "background-summary-model"
BACKGROUND_SUMMARY = "A short summary."


@pytest.fixture
def fake_groq() -> Iterator[FakeGroq]:
    """The fake Groq; summary requests of `BACKGROUND_SUMMARY_MODEL` always get a summary, so
    tests about something else need not script the summary made when their client leaves."""
    with FakeGroq() as fake:
        fake.answer_model(BACKGROUND_SUMMARY_MODEL, text_reply(BACKGROUND_SUMMARY))
        yield fake
        fake.assert_complete()


@pytest.fixture
def make_settings(tmp_path: Path, fake_groq: FakeGroq) -> Callable[..., Settings]:
    """Settings for a test server: its own SQLite file, the fake Groq, fast timers."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path / 'app.db'}",
            "state_dir": str(tmp_path / "state"),
            # Explicit, so a test never picks the local model by accident (`auto` might).
            "llm_provider": "groq",
            "groq_api_key": "test-key",
            "groq_base_url": fake_groq.base_url,
            "groq_model": "test-model",
            "summary_model": BACKGROUND_SUMMARY_MODEL,
            "title_model": BACKGROUND_SUMMARY_MODEL,
            "llm_max_retries": 0,
            "llm_timeout_s": 5.0,
            "write_flush_ms": 5.0,
            "shutdown_grace_s": 2.0,
            "resume_wait_s": 5.0,
            # A job "left running by a stopped process" is taken over within a test's waits.
            "summary_claim_timeout_s": 2.0,
            "summary_poll_s": 0.25,
            # Spans go to a test's own exporter (`span_exporter`), never to a developer's
            # collector named in the environment.
            "otel_exporter_otlp_endpoint": None,
            "otel_exporter_otlp_traces_endpoint": None,
            # This process starts hundreds of servers: frozen objects would never be freed.
            "gc_freeze": False,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def start_server(make_settings: Callable[..., Settings]) -> Iterator[StartServer]:
    """Start a real server; extra tools, a span exporter and setting overrides per call."""
    started: list[RunningServer] = []

    def start(
        *,
        tools: Sequence[ToolFunction] = (),
        span_exporter: SpanExporter | None = None,
        **overrides: Any,
    ) -> RunningServer:
        settings = make_settings(**overrides)
        tools = [*DEFAULT_TOOLS, *tools]
        server = RunningServer(settings, tools=tools, span_exporter=span_exporter).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def server(start_server: StartServer) -> RunningServer:
    return start_server()
