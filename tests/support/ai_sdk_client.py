"""The `ai` package from npm driving our server: `tests/ai_sdk/client/chat.mjs` run with Node.js
(installed by `make test`: `npm ci` in tests/ai_sdk/client), its JSON read back here."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO_ROOT / "tests/ai_sdk/client"
CHAT_SCRIPT = CLIENT_DIR / "chat.mjs"
_AI_PACKAGE = CLIENT_DIR / "node_modules/ai/package.json"
_RUN_TIMEOUT_S = 30.0

Json = dict[str, Any]
Transport = Literal["http", "ws"]
Action = Literal["send", "regenerate", "stop", "resume", "reconnect"]


def missing_node_client() -> str | None:
    """Why the Node client cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "Node.js is not on PATH: apt-get install nodejs npm"
    if not _AI_PACKAGE.exists():
        return (
            "the ai package is not installed: run scripts/test-services.sh "
            "(or `npm ci` in tests/ai_sdk/client)"
        )
    return None


@dataclass
class ClientRun:
    """One run of the Node client: its exit status, the marks it reached, its result."""

    returncode: int
    marks: list[str]
    result: Json
    stderr: str

    @property
    def chats(self) -> list[Json]:
        chats: list[Json] = self.result["chats"]
        return chats

    @property
    def protocol_errors(self) -> list[str]:
        errors: list[str] = self.result["protocolErrors"]
        return errors

    def assert_clean(self) -> None:
        """The `ai` package saw no protocol error and the script ended normally."""
        report = f"node client: exit {self.returncode}, {self.protocol_errors}\n{self.stderr}"
        assert not self.protocol_errors, report
        assert self.returncode == 0, report


@dataclass
class NodeChatClient:
    """Runs `chat.mjs` against a server; `on_mark` handlers act when the script reaches a step."""

    server_url: str
    transport: Transport
    env: Mapping[str, str] = field(default_factory=dict)

    async def run(
        self,
        action: Action,
        chat_id: str,
        *extra: str,
        text: str = "",
        on_mark: Mapping[str, Callable[[], None]] | None = None,
        timeout: float = _RUN_TIMEOUT_S,
    ) -> ClientRun:
        """Run one action to its end; fail the test if it does not end within `timeout`."""
        arguments = [
            *("--server", self.server_url, "--chat", chat_id),
            *("--transport", self.transport, "--action", action, "--text", text),
            *extra,
        ]
        process = await asyncio.create_subprocess_exec(
            "node",
            str(CHAT_SCRIPT),
            *arguments,
            cwd=CLIENT_DIR,
            env={**os.environ, **self.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(timeout):
            return await _collect(process, on_mark or {})


async def _collect(
    process: asyncio.subprocess.Process, on_mark: Mapping[str, Callable[[], None]]
) -> ClientRun:
    assert process.stdout is not None
    assert process.stderr is not None
    marks: list[str] = []
    result: Json | None = None
    stderr = asyncio.ensure_future(process.stderr.read())
    try:
        async for line in process.stdout:
            message = json.loads(line)
            if "mark" in message:
                marks.append(message["mark"])
                on_mark.get(message["mark"], lambda: None)()
            else:
                result = message["result"]
    finally:
        if not process.stdout.at_eof():
            process.kill()  # timed out, or a mark handler failed: nothing more to wait for
        errors = (await stderr).decode(errors="replace")
        returncode = await process.wait()
    assert result is not None, f"the node client printed no result (exit {returncode}):\n{errors}"
    return ClientRun(returncode=returncode, marks=marks, result=result, stderr=errors)
