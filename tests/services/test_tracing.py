"""Spans of real turns on a real server, read with the SDK's in-memory exporter: their names,
parents, links and GenAI attributes for a turn with a tool call, a failure and a cancel."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.attributes.enduser_attributes import ENDUSER_ID
from opentelemetry.semconv._incubating.attributes.session_attributes import SESSION_ID
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.trace import ProxyTracerProvider, SpanKind, StatusCode
from pydantic import JsonValue

from app.services.llm.groq import GroqProvider
from app.services.runtime import Runtime
from app.services.tracing import (
    BATCH_SESSION_IDS,
    FIRST_CHUNK_EVENT,
    JOB_OUTCOME,
    RESPONSE_STATUS,
    STORE_RETRY_EVENT,
    TracedProvider,
    otlp_traces_endpoint,
)
from app.settings import Settings, SettingsError, load_settings
from tests.conftest import BACKGROUND_SUMMARY_MODEL, StartServer
from tests.fakes.groq_server import (
    FakeGroq,
    Usage,
    error_reply,
    hold_reply,
    text_reply,
    tool_call_reply,
)
from tests.support.process import REPO_ROOT
from tests.support.server import RunningServer
from tests.support.stall import stalled
from tests.support.waiting import wait_until

API_KEY = "tracing-test-key"
CONTENT_ATTRIBUTES = (
    gen_ai.GEN_AI_INPUT_MESSAGES,
    gen_ai.GEN_AI_OUTPUT_MESSAGES,
    gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS,
    gen_ai.GEN_AI_TOOL_CALL_RESULT,
)


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = named(spans, name)
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def linked_span_ids(span: ReadableSpan) -> set[int]:
    return {link.context.span_id for link in span.links}


async def spans_named(exporter: InMemorySpanExporter, *names: str) -> tuple[ReadableSpan, ...]:
    """The finished spans once every name in `names` has ended at least once."""

    async def ended() -> bool:
        finished = {span.name for span in exporter.get_finished_spans()}
        return all(name in finished for name in names)

    await wait_until(ended, what=f"spans {names}")
    return exporter.get_finished_spans()


def runtime_of(server: RunningServer) -> Runtime:
    runtime: Runtime = server.app.state.runtime
    return runtime


async def test_a_turn_with_a_tool_call_is_one_trace_of_nested_genai_spans(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    exporter = InMemorySpanExporter()
    server = start_server(span_exporter=exporter, auth_mode="api_key", api_keys=[API_KEY])
    fake_groq.script(
        tool_call_reply(("fetch_user_profile", {"user_id": "123"}), usage=Usage(10, 3)),
        text_reply("Ada ", "Lovelace", usage=Usage(40, 2)),
    )
    async with server.connect(f"token={API_KEY}") as client:
        session_id = (await client.ready())["session_id"]
        frames = await client.ask("who is 123?")
    assert frames[-1]["status"] == "completed"
    response_id = frames[-1]["response_id"]
    call_id = next(f["call_id"] for f in frames if f["type"] == "tool.call")
    spans = await spans_named(exporter, "invoke_agent", "websocket /ws", "summary job")

    connection = one(spans, "websocket /ws")
    assert connection.kind is SpanKind.SERVER
    assert attrs(connection)[SESSION_ID] == session_id
    owner = attrs(connection)[ENDUSER_ID]
    assert str(owner).startswith("key:")

    # The response: a trace of its own, linked to the connection that asked for it.
    response = one(spans, "invoke_agent")
    assert response.parent is None
    assert linked_span_ids(response) == {span_id(connection)}
    assert attrs(response) == {
        gen_ai.GEN_AI_OPERATION_NAME: "invoke_agent",
        gen_ai.GEN_AI_CONVERSATION_ID: session_id,
        SESSION_ID: session_id,
        gen_ai.GEN_AI_RESPONSE_ID: response_id,
        ENDUSER_ID: owner,
        gen_ai.GEN_AI_REQUEST_MODEL: "test-model",
        gen_ai.GEN_AI_RESPONSE_MODEL: "test-model",
        gen_ai.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        gen_ai.GEN_AI_USAGE_INPUT_TOKENS: 50,
        gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
        RESPONSE_STATUS: "completed",
    }
    assert response.status.status_code is StatusCode.UNSET

    # Its children: two model requests around one tool call, in the same trace.
    chats = sorted(named(spans, "chat test-model"), key=lambda span: span.start_time or 0)
    tool = one(spans, "execute_tool fetch_user_profile")
    for child in (*chats, tool):
        assert parent_of(child) == span_id(response)
        assert trace_id(child) == trace_id(response)
    assert len(chats) == 2
    first, second = chats
    assert first.kind is SpanKind.CLIENT
    assert attrs(first)[gen_ai.GEN_AI_PROVIDER_NAME] == "groq"
    assert attrs(first)[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)
    assert attrs(first)[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert attrs(second)[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] == 2
    assert (first.end_time or 0) <= (tool.start_time or 0)
    # Time to first token is one event per request, never one per token.
    for chat in chats:
        assert [event.name for event in chat.events] == [FIRST_CHUNK_EVENT]
        ttft = attrs(chat)[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
        assert isinstance(ttft, float)
        assert ttft >= 0
    assert attrs(tool)[gen_ai.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert attrs(tool)[gen_ai.GEN_AI_TOOL_NAME] == "fetch_user_profile"
    assert attrs(tool)[gen_ai.GEN_AI_TOOL_CALL_ID] == call_id
    assert attrs(tool)[SESSION_ID] == session_id
    assert tool.status.status_code is StatusCode.UNSET

    # The store batches that wrote the turn link to the spans that queued their events.
    batches = named(spans, "append events")
    assert batches
    assert all(batch.parent is None for batch in batches)
    assert any(span_id(response) in linked_span_ids(batch) for batch in batches)
    assert {attrs(batch)[BATCH_SESSION_IDS] for batch in batches} == {(session_id,)}

    # The summary after the client left: its own trace, its model request inside it.
    summary = one(spans, "summary job")
    assert summary.parent is None
    assert attrs(summary)[SESSION_ID] == session_id
    assert attrs(summary)[JOB_OUTCOME] == "done"
    # So is the title made after the first exchange; each has its model request inside it.
    spans = await spans_named(exporter, "title job")
    title = one(spans, "title job")
    assert title.parent is None
    assert attrs(title)[SESSION_ID] == session_id
    background = named(spans, f"chat {BACKGROUND_SUMMARY_MODEL}")
    assert sorted(parent_of(chat) or 0 for chat in background) == sorted(
        [span_id(summary), span_id(title)]
    )

    # Every span of the session's work names the session and its owner.
    for span in (*chats, tool, summary, title, *background):
        assert (attrs(span)[SESSION_ID], attrs(span)[ENDUSER_ID]) == (session_id, owner)
        assert attrs(span)[gen_ai.GEN_AI_CONVERSATION_ID] == session_id

    # Without OTEL_CAPTURE_CONTENT no text of the conversation is on any span.
    assert not [
        (span.name, key) for span in spans for key in CONTENT_ATTRIBUTES if key in attrs(span)
    ]


async def test_rest_requests_are_spans_named_for_their_route(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    exporter = InMemorySpanExporter()
    server = start_server(span_exporter=exporter, auth_mode="api_key", api_keys=[API_KEY])
    fake_groq.script(text_reply("hi"))
    async with server.connect(f"token={API_KEY}") as client:
        session_id = (await client.ready())["session_id"]
        await client.ask("hello")
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "traceparent": f"00-{caller_trace}-b7ad6b7169203331-01",
    }
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers) as http:
        assert (await http.get(f"/api/sessions/{session_id}")).status_code == 200
        assert (await http.get("/api/sessions/not-a-session")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200
    spans = await spans_named(exporter, "GET /api/sessions/{session_id}")
    found, missing = named(spans, "GET /api/sessions/{session_id}")
    assert found.kind is SpanKind.SERVER
    # The caller's `traceparent` makes the request part of the caller's trace.
    assert format(trace_id(found), "032x") == caller_trace
    assert parent_of(found) == int("b7ad6b7169203331", 16)
    assert attrs(found)[SESSION_ID] == session_id
    assert str(attrs(found)[ENDUSER_ID]).startswith("key:")
    assert attrs(found)[HTTP_ROUTE] == "/api/sessions/{session_id}"
    assert attrs(found)[HTTP_RESPONSE_STATUS_CODE] == 200
    assert attrs(missing)[HTTP_RESPONSE_STATUS_CODE] == 404
    # Probes are not traced.
    assert not [span for span in spans if "healthz" in span.name]


async def test_a_failed_model_request_fails_its_span_and_the_response(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    exporter = InMemorySpanExporter()
    server = start_server(span_exporter=exporter)
    fake_groq.script(error_reply(500, code="internal_server_error", message="upstream down"))
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("hello?")
    assert frames[-1]["status"] == "failed"
    spans = await spans_named(exporter, "invoke_agent", "chat test-model")
    response = one(spans, "invoke_agent")
    chat = one(spans, "chat test-model")
    assert parent_of(chat) == span_id(response)
    assert chat.status.status_code is StatusCode.ERROR
    assert attrs(chat)[ERROR_TYPE] == "internal_server_error"
    assert chat.events == ()  # no first token
    assert response.status.status_code is StatusCode.ERROR
    assert attrs(response)[ERROR_TYPE] == "llm_unavailable"
    assert attrs(response)[RESPONSE_STATUS] == "failed"
    assert attrs(response)[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("error",)


async def test_a_cancelled_response_ends_its_spans_as_cancelled_not_failed(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    started = asyncio.Event()

    async def wait_forever() -> dict[str, JsonValue]:
        """Runs until cancelled."""
        started.set()
        await asyncio.Event().wait()
        return {}

    exporter = InMemorySpanExporter()
    server = start_server(span_exporter=exporter, tools=[wait_forever], tool_timeout_s=30)
    fake_groq.script(tool_call_reply(("wait_forever", {})))
    async with server.connect() as client:
        await client.ready()
        await client.send({"type": "user.message", "text": "wait"})
        await client.recv_until("tool.call")
        await client.send({"type": "response.cancel"})
        frames = await client.recv_until("response.done")
    assert frames[-1]["status"] == "cancelled"
    spans = await spans_named(exporter, "invoke_agent", "execute_tool wait_forever")
    response = one(spans, "invoke_agent")
    tool = one(spans, "execute_tool wait_forever")
    assert parent_of(tool) == span_id(response)
    assert attrs(tool)[ERROR_TYPE] == "cancelled"
    assert tool.status.status_code is StatusCode.UNSET
    assert attrs(response)[RESPONSE_STATUS] == "cancelled"
    assert attrs(response)[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] == ("cancelled",)
    assert response.status.status_code is StatusCode.UNSET
    assert ERROR_TYPE not in attrs(response)


async def test_a_cancel_mid_stream_closes_the_upstream_and_marks_the_model_request(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    exporter = InMemorySpanExporter()
    server = start_server(span_exporter=exporter)
    fake_groq.script(hold_reply(*[f"w{i} " for i in range(50)], delay_s=0.05))
    async with server.connect() as client:
        await client.ready()
        await client.send({"type": "user.message", "text": "talk"})
        await client.recv_until("response.delta")
        await client.send({"type": "response.cancel"})
        frames = await client.recv_until("response.done")
    assert frames[-1]["status"] == "cancelled"
    # The traced provider closes the request it wraps, as the bare one does.
    await asyncio.to_thread(fake_groq.wait_for_disconnect)
    spans = await spans_named(exporter, "invoke_agent", "chat test-model")
    chat = one(spans, "chat test-model")
    assert attrs(chat)[ERROR_TYPE] == "cancelled"
    assert chat.status.status_code is StatusCode.UNSET
    assert [event.name for event in chat.events] == [FIRST_CHUNK_EVENT]
    assert parent_of(chat) == span_id(one(spans, "invoke_agent"))


async def test_a_batch_the_store_refused_for_a_while_shows_its_retries(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    exporter = InMemorySpanExporter()
    server = start_server(span_exporter=exporter, database_timeout_s=0.2)
    writer = runtime_of(server).writer
    async with server.connect() as client:
        await client.ready()
        # Stored with its first message; the stall is on the second one's batch.
        await client.speak(lambda: fake_groq.script(text_reply("first")))
        fake_groq.script(text_reply("hi"))
        with stalled(server):
            await client.send({"type": "user.message", "text": "hello", "id": "m1"})

            async def failing() -> bool:
                return writer.failing_since is not None

            await wait_until(failing, what="a failed write")
        frames = await client.recv_until("response.done", timeout=10)
    assert frames[0]["type"] == "user.message"
    spans = await spans_named(exporter, "append events", "websocket /ws")
    retried = [span for span in named(spans, "append events") if span.events]
    assert retried
    assert {event.name for span in retried for event in span.events} == {STORE_RETRY_EVENT}
    # The user message was queued by the connection: its batch links there.
    connection = one(spans, "websocket /ws")
    assert any(span_id(connection) in linked_span_ids(span) for span in retried)


async def test_content_is_on_spans_only_when_capture_is_on(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    exporter = InMemorySpanExporter()
    server = start_server(span_exporter=exporter, otel_capture_content=True)
    fake_groq.script(
        tool_call_reply(("calculate", {"expression": "6*7"})),
        text_reply("It is ", "42"),
    )
    async with server.connect() as client:
        await client.ready()
        frames = await client.ask("what is 6*7?")
    assert frames[-1]["text"] == "It is 42"
    spans = await spans_named(exporter, "invoke_agent")
    response = dict(one(spans, "invoke_agent").attributes or {})
    assert orjson.loads(str(response[gen_ai.GEN_AI_INPUT_MESSAGES])) == [
        {"role": "user", "parts": [{"type": "text", "content": "what is 6*7?"}]}
    ]
    assert orjson.loads(str(response[gen_ai.GEN_AI_OUTPUT_MESSAGES])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "It is 42"}],
            "finish_reason": "stop",
        }
    ]
    tool = dict(one(spans, "execute_tool calculate").attributes or {})
    assert orjson.loads(str(tool[gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS])) == {"expression": "6*7"}
    assert "42" in str(tool[gen_ai.GEN_AI_TOOL_CALL_RESULT])
    first, second = sorted(named(spans, "chat test-model"), key=lambda s: s.start_time or 0)
    asked = orjson.loads(str(attrs(first)[gen_ai.GEN_AI_INPUT_MESSAGES]))
    assert asked[-1] == {"role": "user", "parts": [{"type": "text", "content": "what is 6*7?"}]}
    called = orjson.loads(str(attrs(first)[gen_ai.GEN_AI_OUTPUT_MESSAGES]))
    assert called[0]["parts"][0]["type"] == "tool_call"
    assert called[0]["parts"][0]["name"] == "calculate"
    answered = orjson.loads(str(attrs(second)[gen_ai.GEN_AI_INPUT_MESSAGES]))
    assert answered[-1]["role"] == "tool"
    assert answered[-1]["parts"][0]["type"] == "tool_call_response"


async def test_without_an_endpoint_nothing_is_traced(
    start_server: StartServer, fake_groq: FakeGroq
) -> None:
    server = start_server()
    fake_groq.script(text_reply("hi"))
    runtime = runtime_of(server)
    assert not runtime.tracing.enabled
    # The provider is the bare one: no wrapper, nothing between the model and the socket.
    assert isinstance(runtime.provider, GroqProvider)
    assert not isinstance(runtime.provider, TracedProvider)
    async with server.connect() as client:
        await client.ready()
        assert (await client.ask("hello"))[-1]["status"] == "completed"


async def test_log_lines_of_a_traced_turn_carry_its_trace_id(
    start_server: StartServer, fake_groq: FakeGroq, capfd: pytest.CaptureFixture[str]
) -> None:
    async def log_a_line() -> dict[str, JsonValue]:
        """Logs one line."""
        logging.getLogger("tests.tool").warning("the tool ran")
        return {}

    exporter = InMemorySpanExporter()
    server = start_server(span_exporter=exporter, tools=[log_a_line])
    fake_groq.script(tool_call_reply(("log_a_line", {})), text_reply("done"))
    async with server.connect() as client:
        await client.ready()
        await client.ask("log")
    spans = await spans_named(exporter, "invoke_agent")
    tool = one(spans, "execute_tool log_a_line")
    lines = [orjson.loads(line) for line in capfd.readouterr().err.splitlines() if "{" in line]
    logged = next(line for line in lines if line.get("message") == "the tool ran")
    assert logged["trace_id"] == format(trace_id(tool), "032x")
    assert logged["span_id"] == format(span_id(tool), "016x")
    ready = next(line for line in lines if str(line.get("message", "")).startswith("ready:"))
    assert "trace_id" not in ready  # outside any span
    # Our code never installs a process-wide provider: other apps in this process are untouched.
    assert isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


def test_the_endpoint_must_be_http_and_traces_go_to_its_v1_traces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in str(refused.value)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    base = Settings(_env_file=None, otel_exporter_otlp_endpoint="http://collector:4318/")
    assert otlp_traces_endpoint(base) == "http://collector:4318/v1/traces"
    own = base.model_copy(update={"otel_exporter_otlp_traces_endpoint": "https://x/traces"})
    assert otlp_traces_endpoint(own) == "https://x/traces"
    assert otlp_traces_endpoint(Settings(_env_file=None)) is None


def test_without_an_endpoint_the_sdk_is_not_even_imported(tmp_path: Path) -> None:
    # A fresh interpreter (this one imported the SDK for the other tests): the app, its settings
    # and its tracing as `start_runtime` makes them, without an endpoint.
    script = (
        "import sys\n"
        "import app.main\n"
        "from app.settings import load_settings\n"
        "from app.services.tracing import start_tracing\n"
        "tracing = start_tracing(load_settings())\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk', "
        "'opentelemetry.exporter'))]\n"
        "print(tracing.enabled, loaded)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip().splitlines()[-1] == "False []"
