"""Logs are JSON lines that carry session and response ids, and never a secret or a token."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from app.logs import REDACTED, RedactSecrets
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.client import WsClient
from tests.support.process import ServerProcess

API_KEY = "alice-very-secret-key"
GROQ_KEY = "gsk-groq-secret-value"


def test_redaction_covers_tokens_bearers_and_configured_secrets() -> None:
    redaction = RedactSecrets([GROQ_KEY])
    record = logging.makeLogRecord(
        {"msg": '%s - "WebSocket %s" %s', "args": ("1.2.3.4", "/ws?token=abc123&x=1", 101)}
    )
    redaction.filter(record)
    assert record.getMessage() == f'1.2.3.4 - "WebSocket /ws?token={REDACTED}&x=1" 101'
    assert (
        redaction.redact(f"Authorization: Bearer {GROQ_KEY}") == f"Authorization: Bearer {REDACTED}"
    )
    assert GROQ_KEY not in redaction.redact(f"key was {GROQ_KEY}!")


async def test_server_logs_are_json_with_ids_and_without_secrets(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    fake_groq.script(text_reply("hello"))
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "LLM_PROVIDER": "groq",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": fake_groq.base_url,
        "GROQ_MODEL": "test-model",
        "SUMMARY_MODEL": "background-summary-model",
        "LLM_MAX_RETRIES": "0",
        "AUTH_MODE": "api_key",
        "API_KEYS": API_KEY,
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
    }
    fake_groq.answer_model("background-summary-model", text_reply("A summary."))
    server = ServerProcess(env, tmp_path).start()
    try:
        async with connect(f"{server.ws_url}?token={API_KEY}") as connection:
            client = WsClient(connection)
            session_id = (await client.ready())["session_id"]
            done = (await client.ask("hi"))[-1]
        server.signal(signal.SIGTERM)
        server.wait()
    finally:
        server.stop()
    text = server.log.read_text()
    assert API_KEY not in text
    assert GROQ_KEY not in text
    assert f"token={REDACTED}" in text
    entries = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    in_response = [e for e in entries if e.get("response_id") == done["response_id"]]
    assert in_response, "no log line carries the response id"
    assert all(e["session_id"] == session_id for e in in_response)
    assert {"time", "level", "logger", "message"} <= set(in_response[0])
