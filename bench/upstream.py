"""A fake Groq that streams chat completions (SSE over HTTP/1.1) on a fixed schedule.

Run: ``python -m bench.upstream --port 0`` (prints ``listening <port>``). Every POST to
``/openai/v1/chat/completions`` is answered with a 200 ``text/event-stream`` in Groq's wire
format (an opening chunk, one chunk per token, a last chunk with ``finish_reason`` and usage,
``data: [DONE]``), paced by the schedule written in the last user message (`bench.schedule`).
With ``tool=1`` the first round is one ``get_current_time`` call; a request whose last message
is a tool result gets the text. Writes wait for the socket to drain, so a reader that stops
reading pauses its stream instead of growing a buffer here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import orjson
import uvloop

from bench.schedule import BENCH_PREFIX, Schedule, parse_schedule, token_text

_HEAD_END = b"\r\n\r\n"
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
_CHAT_PATH = "/openai/v1/chat/completions"
_BACKGROUND = Schedule(tokens=3, rate=1000.0, ttft_ms=0.0)
_MODEL = "bench/upstream"
_TOKEN_SUFFIX = b'"},"logprobs":null,"finish_reason":null}]}\n\n'


def _chunked(event: bytes) -> bytes:
    """One SSE event as one HTTP chunk."""
    return b"%x\r\n%s\r\n" % (len(event), event)


def _sse(payload: dict[str, Any]) -> bytes:
    return _chunked(b"data: " + orjson.dumps(payload) + b"\n\n")


class _Chunks:
    """Groq's `chat.completion.chunk` objects for one stream."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.created = int(time.time())
        # The per-token chunk is built by hand: the token text needs no JSON escaping.
        head = {"id": request_id, "object": "chat.completion.chunk", "created": self.created}
        self._token_prefix = (
            b"data: "
            + orjson.dumps({**head, "model": _MODEL, "system_fingerprint": "fp_bench"})[:-1]
            + b',"choices":[{"index":0,"delta":{"content":"'
        )

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": _MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [choice],
        }

    def opening(self) -> bytes:
        payload = self.chunk({"role": "assistant", "content": ""})
        return _sse({**payload, "x_groq": {"id": self.request_id}})

    def token(self, text: str) -> bytes:
        event = self._token_prefix + text.encode() + _TOKEN_SUFFIX
        return _chunked(event)

    def tool_call(self) -> bytes:
        call = {
            "id": f"call_{self.request_id}",
            "type": "function",
            "index": 0,
            "function": {"name": "get_current_time", "arguments": "{}"},
        }
        return _sse(self.chunk({"tool_calls": [call]}))

    def closing(self, finish_reason: str, completion_tokens: int) -> bytes:
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": completion_tokens,
            "total_tokens": 10 + completion_tokens,
        }
        payload = {**self.chunk({}, finish_reason), "x_groq": {"id": self.request_id}}
        payload["usage"] = usage
        return _sse(payload) + _chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class Upstream:
    """The fake upstream's connection handler; counts requests and tokens sent."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one keep-alive connection until the client closes it."""
        try:
            while await self._serve_one(reader, writer):
                pass
        # A client that leaves mid-stream: uvloop raises RuntimeError on a closed transport.
        except (
            ConnectionError,
            RuntimeError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(_HEAD_END)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in header_lines if ": " in line)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if _CHAT_PATH not in request_line:
            writer.write(_NOT_FOUND)
            return True
        self.requests += 1
        await self._stream(writer, orjson.loads(body) if body else {})
        return True

    async def _stream(self, writer: asyncio.StreamWriter, request: dict[str, Any]) -> None:
        messages = request.get("messages") or []
        user_texts = [m.get("content") or "" for m in messages if m.get("role") == "user"]
        last = user_texts[-1] if user_texts else ""
        # Background requests (titles, summaries) quote the conversation: a short quick answer.
        schedule = parse_schedule(last) if last.startswith(BENCH_PREFIX) else _BACKGROUND
        chunks = _Chunks(f"req_{self.requests}")
        started = asyncio.get_running_loop().time()
        writer.write(_STREAM_HEAD + chunks.opening())
        if schedule.tool and messages and messages[-1].get("role") != "tool":
            await _sleep_until(started + schedule.ttft_ms / 1000)
            writer.write(chunks.tool_call() + chunks.closing("tool_calls", 1))
            await writer.drain()
            return
        await self._tokens(writer, chunks, schedule, started)
        writer.write(chunks.closing("stop", schedule.tokens))
        await writer.drain()

    async def _tokens(
        self, writer: asyncio.StreamWriter, chunks: _Chunks, schedule: Schedule, started: float
    ) -> None:
        for index in range(schedule.tokens):
            await _sleep_until(started + schedule.due_s(index))
            writer.write(chunks.token(token_text(index)))
            await writer.drain()


async def _sleep_until(when: float) -> None:
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def serve(port: int) -> None:
    """Listen on loopback and print the port once ready."""
    upstream = Upstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", port, backlog=4096)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Entry point: `python -m bench.upstream --port N`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
