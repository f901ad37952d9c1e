"""A fake OpenAI-compatible chat-completions server, on a real loopback socket.

OpenAI, Ollama, vLLM and llama.cpp's server share the wire format Groq speaks at its own
OpenAI-compatible path: ``POST {base}/chat/completions`` with the same request body, streamed
``data: {chat.completion.chunk}`` events ending in ``data: [DONE]``, and the same error bodies
``{"error": {"message", "type", "code", "param"}}``. So this fake is the Groq fake
(:mod:`tests.fakes.groq_server`) seen through that path, with the difference that matters for an
OpenAI-style server scripted by default: tool-call arguments arrive in fragments. The Groq-only
``x_groq`` field the chunks also carry is unknown to the ``openai`` SDK, which ignores it (and so
must our adapter: it never reads it).

Driven by the real ``openai.AsyncOpenAI`` SDK with ``base_url=fake.base_url``; what each reply
does to the SDK is checked in ``tests/services/llm/test_openai_provider.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tests.fakes.groq_server import (
    FakeGroq,
    StreamReply,
    ToolCallLike,
    Usage,
    tool_call_reply,
)

OPENAI_COMPATIBLE_PREFIX = "/openai/v1"


class FakeOpenAI(FakeGroq):
    """The fake at its OpenAI-compatible base URL (the SDK appends ``/chat/completions``)."""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/openai/v1``; pass it as ``OPENAI_BASE_URL``."""
        return super().base_url + OPENAI_COMPATIBLE_PREFIX


def fragmented_tool_call_reply(
    *calls: ToolCallLike, text_before: Sequence[str] = (), usage: Usage | None = None
) -> StreamReply:
    """Tool calls the OpenAI way: a head delta (id, name, ``arguments: ""``), then the
    arguments in several fragments that carry only the call's ``index``."""
    return tool_call_reply(*calls, text_before=text_before, fragmented=True, usage=usage)
