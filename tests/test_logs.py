"""Logs are JSON lines that carry session and response ids, and never a secret or a token."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from app.logs import REDACTED, RedactSecrets
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.fakes.jwks_server import FakeSupabaseAuth
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


# Starlette percent-decodes query parameter names (and `+`), so each of these is read as the
# credential parameter it spells.
ENCODED_NAMES = [
    "%74oken",
    "tok%65n",
    "TOK%45N",
    "access_%74oken",
    "api%5Fkey",
    "%61pikey",
    "api+key",
    "api_key",
]


@pytest.mark.parametrize("name", ENCODED_NAMES)
def test_redaction_decodes_query_parameter_names(name: str) -> None:
    redaction = RedactSecrets([])
    line = f"GET /api/sessions?limit=5&{name}=credential-value&x=1"
    assert redaction.redact(line) == f"GET /api/sessions?limit=5&{name}={REDACTED}&x=1"


def test_redaction_keeps_parameters_that_are_not_credentials() -> None:
    line = "GET /api/sessions?limit=5&before=abc%3D&session_id=tok"
    assert RedactSecrets([]).redact(line) == line


def _server_env(tmp_path: Path, fake_groq: FakeGroq) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "LLM_PROVIDER": "groq",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": fake_groq.base_url,
        "GROQ_MODEL": "test-model",
        "SUMMARY_MODEL": "background-summary-model",
        "LLM_MAX_RETRIES": "0",
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
    }


async def test_access_log_redacts_credentials_under_encoded_parameter_names(
    tmp_path: Path, fake_groq: FakeGroq
) -> None:
    # Supabase user tokens are not configured secrets: only the parameter name gives them away.
    with FakeSupabaseAuth() as fake_auth:
        env = {
            **_server_env(tmp_path, fake_groq),
            "AUTH_MODE": "supabase",
            "SUPABASE_URL": fake_auth.base_url,
        }
        server = ServerProcess(env, tmp_path).start()
        try:
            tokens = await _use_credentials_under_encoded_names(server, fake_auth)
            server.signal(signal.SIGTERM)
            server.wait()
        finally:
            server.stop()
    text = server.log.read_text()
    assert [token for token in tokens if token in text] == []
    for name in ("%74oken", "tok%65n", "api%5Fkey", "%61pikey"):
        assert f"{name}={REDACTED}" in text, name


async def _use_credentials_under_encoded_names(
    server: ServerProcess, fake_auth: FakeSupabaseAuth
) -> list[str]:
    """Open a WebSocket and call REST with credentials the server accepts; return them."""
    ws_token, rest_token = fake_auth.token("user-ws"), fake_auth.token("user-rest")
    async with connect(f"{server.ws_url}?%74oken={ws_token}") as connection:
        assert (await WsClient(connection).ready())["type"] == "session.ready"
    keys = ["key-value-one", "key-value-two"]
    base = server.ws_url.replace("ws://", "http://").removesuffix("/ws")
    async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
        accepted = await http.get(f"/api/sessions?tok%65n={rest_token}")
        assert accepted.status_code == 200, accepted.text
        for name, key in zip(("api%5Fkey", "%61pikey"), keys, strict=True):
            assert (await http.get(f"/healthz?{name}={key}")).status_code == 200
    return [ws_token, rest_token, *keys]


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
