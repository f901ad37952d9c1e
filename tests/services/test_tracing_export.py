"""End to end: a server process configured only with OTEL_EXPORTER_OTLP_ENDPOINT exports its
spans over OTLP/HTTP to a real receiver, and flushes them when it stops."""

from __future__ import annotations

import signal
from pathlib import Path

from websockets.asyncio.client import connect

from app.services.tracing import DEFAULT_SERVICE_NAME
from tests.fakes.groq_server import FakeGroq, text_reply, tool_call_reply
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.client import WsClient
from tests.support.process import ServerProcess, fake_groq_env


def _only(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


async def test_a_turn_reaches_an_otlp_receiver_as_one_trace(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    fake_groq.script(
        tool_call_reply(("get_current_time", {"timezone": "UTC"})), text_reply("It is noon.")
    )
    env = fake_groq_env(fake_groq.base_url, database_url=f"sqlite:///{tmp_path}/app.db", grace_s=5)
    with OtlpReceiver() as receiver:
        server = ServerProcess({**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}, tmp_path)
        server.start()
        try:
            async with connect(server.ws_url) as connection:
                client = WsClient(connection)
                session_id = (await client.ready())["session_id"]
                frames = await client.ask("what time is it?")
            # Nothing waits for the batch exporter's timer: stopping flushes what is left.
            server.signal(signal.SIGTERM)
            assert server.wait() in (0, -signal.SIGTERM)
        finally:
            server.stop()
        spans = receiver.spans
    assert frames[-1]["status"] == "completed"
    assert receiver.requests >= 1
    assert {span.service_name for span in spans} == {DEFAULT_SERVICE_NAME}
    response = _only(spans, "invoke_agent")
    assert response.attributes["gen_ai.conversation.id"] == session_id
    assert response.attributes["gen_ai.response.id"] == frames[-1]["response_id"]
    assert response.span.parent_span_id == b""
    connection_span = _only(spans, "websocket /ws")
    assert [link.span_id for link in response.span.links] == [connection_span.span.span_id]
    children = [
        span for span in spans if span.name in ("chat test-model", "execute_tool get_current_time")
    ]
    assert sorted(span.name for span in children) == [
        "chat test-model",
        "chat test-model",
        "execute_tool get_current_time",
    ]
    for child in children:
        assert child.span.trace_id == response.span.trace_id
        assert child.span.parent_span_id == response.span.span_id
    chat = next(span for span in children if span.name == "chat test-model")
    assert [event.name for event in chat.span.events] == ["first_token"]
    assert any(span.name == "append events" for span in spans)
