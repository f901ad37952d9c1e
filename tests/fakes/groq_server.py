"""A fake of Groq's chat-completions endpoint, served over real HTTP/1.1 on a loopback socket.

It is driven by the real ``groq.AsyncGroq`` SDK (``base_url=fake.base_url``; the SDK posts to
``{base_url}/openai/v1/chat/completions``) and speaks Groq's wire format as described in
``notes/groq.md`` of the shared material. It runs its own asyncio loop in a background thread,
so tests can script it and inspect it from any thread while the code under test runs in another
loop::

    with FakeGroq() as fake:
        fake.script(
            text_reply("Hel", "lo"),
            error_reply(429, code="rate_limit_exceeded", message="slow"),
        )
        ...  # drive the app, which talks to fake.base_url
        fake.assert_complete()

Replies are consumed one per request, in order. Stream replies are sent as SSE whatever the
request's ``stream`` flag says (non-streamed completions are not faked). A request with nothing
scripted is answered with HTTP 500 "fake groq: unscripted request" (plus ``x-should-retry:
false`` so the SDK gives up at once) and makes :meth:`FakeGroq.assert_complete` fail.

What the groq SDK (1.7.0, httpx 0.28) does with each reply, verified by ``test_groq_server.py``:

* :func:`error_reply` -> before any chunk: ``BadRequestError`` (400), ``AuthenticationError`` (401),
  ``NotFoundError`` (404), ``RateLimitError`` (429), ``InternalServerError`` (5xx),
  ``APIStatusError`` (413, 498). ``.body`` is the WHOLE JSON body ``{"error": {...}}``.
  408/409/429/5xx are retried by the SDK (``max_retries``, default 2).
* :func:`stream_error_reply` -> ``groq.APIError`` (exactly that class, not a subclass) raised by
  the stream iterator after the tokens; ``.body`` is the INNER error object (with ``code`` and
  ``status_code``). Never retried.
* :func:`cut_reply` -> ``httpx.RemoteProtocolError`` ("peer closed connection without sending
  complete message body (incomplete chunked read)") raised by the stream iterator after the
  tokens; not wrapped by the SDK.
* :func:`stall_reply` -> ``httpx.ReadTimeout`` raised by the stream iterator once the client's read
  timeout elapses; not wrapped by the SDK. The fake counts a disconnect when the client then
  closes the connection.

:func:`malformed_reply` sends bytes that are not Groq's wire format inside a 200 stream (invalid
JSON, a chunk of the wrong shape, broken SSE or HTTP framing, a body that ends early): what the
app must read as an upstream failure, never as a bug of its own.

Retry timing: the SDK only honours ``retry-after`` when it is strictly between 0 and 60 seconds;
``retry-after: 0`` falls back to 0.5-1 s exponential backoff. So every error reply also carries
the non-Groq header ``retry-after-ms: 1`` (read by the SDK before ``retry-after``), which keeps SDK
retries instant in tests; pass ``retry_after_ms=None`` to send only Groq's own headers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import http
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Any, Final, Self, TypeAlias

import orjson

CHAT_COMPLETIONS_PATH: Final = "/openai/v1/chat/completions"
UNSCRIPTED_MESSAGE: Final = "fake groq: unscripted request"

_HOST: Final = "127.0.0.1"
_READ_SIZE: Final = 65_536
_MAX_HEAD_BYTES: Final = 65_536
_THREAD_TIMEOUT_S: Final = 5.0
_HEAD_END: Final = b"\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
_RATE_LIMIT_HEADERS: Final = (
    ("x-ratelimit-limit-requests", "1000"),
    ("x-ratelimit-limit-tokens", "250000"),
    ("x-ratelimit-remaining-requests", "999"),
    ("x-ratelimit-remaining-tokens", "249000"),
    ("x-ratelimit-reset-requests", "1m26.4s"),
    ("x-ratelimit-reset-tokens", "240ms"),
)


# --------------------------------------------------------------------------- reply descriptions


@dataclass(frozen=True)
class Usage:
    """Token counts and timings reported in the last chunk (``usage`` and ``x_groq.usage``)."""

    prompt_tokens: int = 10
    completion_tokens: int = 1
    queue_time: float = 0.011
    prompt_time: float = 0.002
    completion_time: float = 0.021

    def to_json(self) -> dict[str, Any]:
        """The usage object exactly as Groq sends it."""
        return {
            "queue_time": self.queue_time,
            "prompt_tokens": self.prompt_tokens,
            "prompt_time": self.prompt_time,
            "completion_tokens": self.completion_tokens,
            "completion_time": self.completion_time,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "total_time": round(self.prompt_time + self.completion_time, 6),
        }


@dataclass(frozen=True)
class ToolCallSpec:
    """One tool call the fake model makes; ``arguments`` as a str is sent verbatim."""

    name: str
    arguments: Mapping[str, Any] | str = "{}"
    id: str | None = None

    def arguments_text(self) -> str:
        """The ``function.arguments`` string on the wire."""
        if isinstance(self.arguments, str):
            return self.arguments
        return orjson.dumps(dict(self.arguments)).decode()


class StreamEnd(Enum):
    """How a streamed (HTTP 200, SSE) reply ends after its deltas."""

    DONE = "done"  # last chunk with finish_reason + usage, `data: [DONE]`, end of body
    ERROR_EVENT = "error_event"  # `event: error` + `data: {"error": ...}`, end of body
    CUT = "cut"  # the server closes the socket mid-body
    STALL = "stall"  # nothing more is sent until the client goes away
    EARLY = "early"  # the body ends properly, but without the last chunk and `[DONE]`
    BAD_FRAMING = "bad_framing"  # bytes that are not HTTP chunked framing, then the socket closes


class Gate:
    """Holds a :func:`gated_reply` at its gate until the test opens it (from any thread), so
    "mid-answer" is a state the test controls, not a moment it times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened = False
        self._reached = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def open(self) -> None:
        """Let every stream held at this gate go on (and any that reaches it later pass)."""
        with self._lock:
            self._opened = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    def wait_reached(self, timeout: float = 5.0) -> None:
        """Block until a stream has sent everything before the gate."""
        if not self._reached.wait(timeout):
            raise AssertionError(f"no stream reached the gate within {timeout:g} s")

    async def passed(self) -> None:
        """On the fake's loop: return once the gate is open."""
        event = asyncio.Event()
        with self._lock:
            self._reached.set()
            if self._opened:
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()


@dataclass(frozen=True)
class StreamReply:
    """An HTTP 200 ``text/event-stream`` answer: an opening chunk, deltas, then ``end``."""

    opening_delta: Mapping[str, Any]
    deltas: tuple[Mapping[str, Any], ...]
    end: StreamEnd = StreamEnd.DONE
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    error: Mapping[str, Any] | None = None
    delay_s: float = 0.0  # slept before each delta (not before the opening chunk)
    gate: Gate | None = None  # held before delta number `gate_at` until the gate opens
    gate_at: int = 0
    raw: tuple[bytes, ...] = ()  # SSE bytes sent as they are after the deltas (malformed ones)


@dataclass(frozen=True)
class ErrorReply:
    """A non-streamed HTTP error answer with a JSON body."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str]


Reply: TypeAlias = StreamReply | ErrorReply
ToolCallLike: TypeAlias = ToolCallSpec | tuple[str, Mapping[str, Any] | str]


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]  # names lowercased; repeated headers joined with ", "
    body: dict[str, Any]  # the JSON body; {} when absent or not a JSON object
    raw_body: bytes


# --------------------------------------------------------------------------- reply builders


def text_reply(
    *tokens: str,
    finish_reason: str = "stop",
    usage: Usage | None = None,
    delay_s: float = 0.0,
    reasoning: Sequence[str] = (),
) -> StreamReply:
    """A streamed answer: ``reasoning`` chunks (``delta.reasoning``), then one chunk per token.

    ``delay_s`` is slept before every delta; a client that closes meanwhile is counted in
    :attr:`FakeGroq.disconnects` and the fake stops sending (the upstream stops generating).
    ``usage`` defaults to 10 prompt tokens and one completion token per delta.
    """
    deltas = [{"reasoning": part} for part in reasoning] + [{"content": token} for token in tokens]
    return StreamReply(
        opening_delta={"role": "assistant", "content": ""},
        deltas=tuple(deltas),
        finish_reason=finish_reason,
        usage=usage or Usage(completion_tokens=len(deltas)),
        delay_s=delay_s,
    )


def hold_reply(*tokens: str, delay_s: float) -> StreamReply:
    """A slow :func:`text_reply`, for tests that close the stream while it is being sent."""
    return text_reply(*tokens, delay_s=delay_s)


def gated_reply(*before: str, after: Sequence[str], gate: Gate) -> StreamReply:
    """A :func:`text_reply` of ``before`` + ``after`` whose stream stops after ``before`` until
    ``gate`` is opened (a client that leaves meanwhile ends it, as with any stream)."""
    reply = text_reply(*before, *after)
    return StreamReply(
        opening_delta=reply.opening_delta,
        deltas=reply.deltas,
        usage=reply.usage,
        gate=gate,
        gate_at=len(before),
    )


def tool_call_reply(
    *calls: ToolCallLike,
    text_before: Sequence[str] = (),
    fragmented: bool = False,
    usage: Usage | None = None,
) -> StreamReply:
    """A streamed answer that ends in tool calls (``finish_reason: "tool_calls"``).

    Groq style by default: each call arrives whole in one delta (index, id ``call_…``, type,
    name and the complete arguments string), one chunk per call. With ``fragmented=True``,
    OpenAI style: a first delta with index/id/type/name and ``arguments: ""``, then several
    deltas carrying only ``index`` and an ``arguments`` fragment. ``text_before`` tokens stream
    first; without them the opening chunk has ``content: null``.
    """
    specs = [_as_tool_call_spec(call) for call in calls]
    deltas: list[Mapping[str, Any]] = [{"content": token} for token in text_before]
    for index, spec in enumerate(specs):
        deltas.extend(_tool_call_deltas(index, spec, fragmented=fragmented))
    return StreamReply(
        opening_delta={"role": "assistant", "content": "" if text_before else None},
        deltas=tuple(deltas),
        finish_reason="tool_calls",
        usage=usage or Usage(completion_tokens=len(deltas)),
    )


def error_reply(
    status: int,
    *,
    code: str,
    message: str,
    type_: str = "invalid_request_error",
    headers: Mapping[str, str] | None = None,
    failed_generation: str | None = None,
    retry_after: str | None = None,
    retry_after_ms: int | None = 1,
) -> ErrorReply:
    """A non-streamed Groq error: ``{"error": {message, type, code, param, failed_generation?}}``.

    A 429 carries ``retry-after`` (default ``"0"``). ``retry_after_ms`` adds the non-Groq header
    the SDK reads first (see the module docstring); ``headers`` override everything.
    """
    error: dict[str, Any] = {"message": message, "type": type_, "code": code, "param": None}
    if failed_generation is not None:
        error["failed_generation"] = failed_generation
    reply_headers: dict[str, str] = {}
    if retry_after is not None or status == 429:
        reply_headers["retry-after"] = retry_after if retry_after is not None else "0"
    if retry_after_ms is not None:
        reply_headers["retry-after-ms"] = str(retry_after_ms)
    reply_headers.update({name.lower(): value for name, value in (headers or {}).items()})
    return ErrorReply(status=status, body={"error": error}, headers=reply_headers)


def stream_error_reply(
    *tokens_before: str,
    code: str = "internal_server_error",
    message: str = "fake groq: error in stream",
    status_code: int = 500,
    type_: str | None = None,
) -> StreamReply:
    """A 200 stream that sends ``tokens_before`` then ``event: error`` and ends the body.

    The SDK's stream iterator yields the tokens and then raises plain ``groq.APIError`` whose
    ``.body`` is the inner error object ``{"message", "type", "code", "status_code"}``.
    """
    default_type = "invalid_request_error" if status_code < 500 else "internal_server_error"
    error = {
        "message": message,
        "type": type_ or default_type,
        "code": code,
        "status_code": status_code,
    }
    return StreamReply(
        opening_delta={"role": "assistant", "content": ""},
        deltas=tuple({"content": token} for token in tokens_before),
        end=StreamEnd.ERROR_EVENT,
        error=error,
    )


def malformed_reply(
    *raw: bytes, tokens_before: Sequence[str] = (), end: StreamEnd = StreamEnd.DONE
) -> StreamReply:
    """A 200 stream that sends ``tokens_before``, then each of ``raw`` as it is (one HTTP chunk
    each: invalid JSON, a wrong shape, broken SSE), then ends as ``end`` says.

    ``StreamEnd.EARLY`` ends the body without the last chunk and ``[DONE]``;
    ``StreamEnd.BAD_FRAMING`` sends bytes that are no HTTP chunk and closes the socket.
    """
    return StreamReply(
        opening_delta={"role": "assistant", "content": ""},
        deltas=tuple({"content": token} for token in tokens_before),
        end=end,
        raw=raw,
    )


def cut_reply(*tokens_before: str) -> StreamReply:
    """A 200 stream that sends ``tokens_before`` then closes the socket mid-body (no ``[DONE]``).

    The SDK's stream iterator yields the tokens and then raises ``httpx.RemoteProtocolError``
    ("peer closed connection without sending complete message body (incomplete chunked read)").
    """
    return StreamReply(
        opening_delta={"role": "assistant", "content": ""},
        deltas=tuple({"content": token} for token in tokens_before),
        end=StreamEnd.CUT,
    )


def stall_reply(*tokens_before: str) -> StreamReply:
    """A 200 stream that sends ``tokens_before`` then nothing, holding the connection open.

    The SDK's stream iterator raises ``httpx.ReadTimeout`` when the client's read timeout
    elapses. When the client closes the connection it counts in :attr:`FakeGroq.disconnects`.
    """
    return StreamReply(
        opening_delta={"role": "assistant", "content": ""},
        deltas=tuple({"content": token} for token in tokens_before),
        end=StreamEnd.STALL,
    )


def _as_tool_call_spec(call: ToolCallLike) -> ToolCallSpec:
    """Accept ``ToolCallSpec`` or ``(name, arguments)``."""
    if isinstance(call, ToolCallSpec):
        return call
    name, arguments = call
    return ToolCallSpec(name=name, arguments=arguments)


def _tool_call_deltas(index: int, spec: ToolCallSpec, *, fragmented: bool) -> list[dict[str, Any]]:
    """The deltas that carry one tool call, whole (Groq) or in argument fragments (OpenAI)."""
    arguments = spec.arguments_text()
    call_id = spec.id or f"call_{secrets.token_hex(12)}"
    head = {"index": index, "id": call_id, "type": "function"}
    if not fragmented:
        function = {"name": spec.name, "arguments": arguments}
        return [{"tool_calls": [{**head, "function": function}]}]
    first = {"tool_calls": [{**head, "function": {"name": spec.name, "arguments": ""}}]}
    fragments = [
        {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
        for piece in _split_in_three(arguments)
    ]
    return [first, *fragments]


def _split_in_three(text: str) -> list[str]:
    """Split ``text`` into up to three non-empty, roughly equal pieces."""
    if not text:
        return []
    size = max(1, -(-len(text) // 3))
    return [text[start : start + size] for start in range(0, len(text), size)]


# --------------------------------------------------------------------------- wire format


def _new_request_id() -> str:
    """A Groq-looking request id (``req_`` + 26 lowercase base32 characters)."""
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    return "req_" + "".join(secrets.choice(alphabet) for _ in range(26))


@dataclass(frozen=True)
class _ChunkFactory:
    """Builds the ``chat.completion.chunk`` objects of one streamed response."""

    model: str
    request_id: str = field(default_factory=_new_request_id)
    completion_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4()}")
    fingerprint: str = field(default_factory=lambda: f"fp_{secrets.token_hex(5)}")

    def chunk(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        """One chunk with a single choice."""
        choice = {
            "index": 0,
            "delta": dict(delta),
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": [choice],
        }

    def opening(self, delta: Mapping[str, Any]) -> dict[str, Any]:
        """The first chunk, which carries ``x_groq.id``."""
        seed = secrets.randbelow(2**31)
        return {**self.chunk(delta), "x_groq": {"id": self.request_id, "seed": seed}}

    def closing(self, finish_reason: str, usage: Usage) -> dict[str, Any]:
        """The last chunk: empty delta, ``finish_reason`` and usage (top level and x_groq)."""
        usage_json = usage.to_json()
        x_groq = {"id": self.request_id, "usage": usage_json}
        return {**self.chunk({}, finish_reason), "x_groq": x_groq, "usage": usage_json}


def _sse_data(payload: Mapping[str, Any]) -> bytes:
    """A ``data:`` server-sent event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _sse_event(name: str, payload: Mapping[str, Any]) -> bytes:
    """A named server-sent event."""
    return f"event: {name}\n".encode() + _sse_data(payload)


def _stream_frames(reply: StreamReply, chunks: _ChunkFactory) -> Iterator[tuple[float, bytes]]:
    """``(delay before it, SSE bytes)`` for each event the reply sends before its ending."""
    yield 0.0, _sse_data(chunks.opening(reply.opening_delta))
    for delta in reply.deltas:
        yield reply.delay_s, _sse_data(chunks.chunk(delta))
    for raw in reply.raw:
        yield 0.0, raw
    if reply.end is StreamEnd.DONE:
        yield 0.0, _sse_data(chunks.closing(reply.finish_reason, reply.usage))
        yield 0.0, b"data: [DONE]\n\n"
    elif reply.end is StreamEnd.ERROR_EVENT:
        yield 0.0, _sse_event("error", {"error": dict(reply.error or {})})


def _http_chunk(data: bytes) -> bytes:
    """One chunk of a ``transfer-encoding: chunked`` body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _response_head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    """Status line and headers of an HTTP/1.1 response, with date and rate-limit headers."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    lines = [f"HTTP/1.1 {status} {reason}", f"date: {email.utils.formatdate(usegmt=True)}"]
    lines += [f"{name}: {value}" for name, value in (*_RATE_LIMIT_HEADERS, *headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _unscripted_reply() -> ErrorReply:
    """The loud answer to a request nobody scripted."""
    return error_reply(
        500,
        code="unscripted_request",
        message=UNSCRIPTED_MESSAGE,
        type_="internal_server_error",
        headers={"x-should-retry": "false"},
    )


def _unknown_url_reply(method: str, path: str) -> ErrorReply:
    """Groq's answer to a request for an endpoint the fake does not serve."""
    message = f"Unknown request URL: {method} {path}. Please check the URL for typos."
    return error_reply(
        404, code="unknown_url", message=message, headers={"x-should-retry": "false"}
    )


# --------------------------------------------------------------------------- shared state


class _Ledger:
    """Thread-safe state shared by the test thread and the server thread."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._replies: deque[Reply] = deque()
        self._standing: dict[str, Reply] = {}
        self._requests: list[RecordedRequest] = []
        self._background: list[RecordedRequest] = []
        self._unscripted = 0
        self._disconnects = 0
        self._connections = 0
        self._errors: list[str] = []

    def script(self, replies: Sequence[Reply]) -> None:
        """Queue replies for the next requests."""
        with self._changed:
            self._replies.extend(replies)

    def drop_script(self) -> list[Reply]:
        """Forget the replies no request has taken yet; returns them."""
        with self._changed:
            dropped = list(self._replies)
            self._replies.clear()
            return dropped

    def answer_model(self, model: str, reply: Reply) -> None:
        """Answer every request for ``model`` with ``reply``, outside the script."""
        with self._changed:
            self._standing[model] = reply

    def take_reply(self, request: RecordedRequest) -> Reply:
        """Record ``request`` and pick its reply (the next scripted one, or a loud error)."""
        with self._changed:
            self._changed.notify_all()
            # Requests answered by a standing reply are background work (titles, summaries):
            # they are kept apart so that `requests` holds only the scripted conversation.
            standing = self._standing.get(str(request.body.get("model")))
            if standing is not None:
                self._background.append(request)
                return standing
            self._requests.append(request)
            if request.method != "POST" or request.path.split("?")[0] != CHAT_COMPLETIONS_PATH:
                self._unscripted += 1
                return _unknown_url_reply(request.method, request.path)
            if not self._replies:
                self._unscripted += 1
                return _unscripted_reply()
            return self._replies.popleft()

    def count_disconnect(self) -> None:
        """A client left while a streamed reply was still being sent."""
        self._bump("_disconnects")

    def count_connection(self) -> None:
        """A client opened a connection."""
        self._bump("_connections")

    def record_error(self, description: str) -> None:
        """An unexpected failure inside the fake itself."""
        with self._changed:
            self._errors.append(description)
            self._changed.notify_all()

    def _bump(self, counter: str) -> None:
        """Increment an int counter and wake waiters."""
        with self._changed:
            setattr(self, counter, getattr(self, counter) + 1)
            self._changed.notify_all()

    def snapshot(self) -> _LedgerSnapshot:
        """A consistent copy of everything, for the test thread."""
        with self._changed:
            return _LedgerSnapshot(
                requests=list(self._requests),
                background_requests=list(self._background),
                unused_replies=list(self._replies),
                unscripted=self._unscripted,
                disconnects=self._disconnects,
                connections=self._connections,
                errors=list(self._errors),
            )

    def wait_until(
        self, condition: Callable[[_LedgerSnapshot], bool], timeout: float, what: str
    ) -> _LedgerSnapshot:
        """Block until ``condition`` holds; fail the test with ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(state := self.snapshot()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"fake groq: timed out after {timeout}s waiting for {what}; {state}"
                    )
                self._changed.wait(remaining)
            return state


@dataclass(frozen=True)
class _LedgerSnapshot:
    """A copy of the ledger at one moment."""

    requests: list[RecordedRequest]
    background_requests: list[RecordedRequest]
    unused_replies: list[Reply]
    unscripted: int
    disconnects: int
    connections: int
    errors: list[str]

    def __str__(self) -> str:
        return (
            f"requests={len(self.requests)} unused_replies={len(self.unused_replies)} "
            f"unscripted={self.unscripted} disconnects={self.disconnects}"
        )


# --------------------------------------------------------------------------- connections


class _MalformedRequestError(Exception):
    """The client sent something that is not an HTTP/1.1 request."""


class _ClientWatch:
    """Notices the client closing its side while a reply is streamed, by reading from it."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._read: asyncio.Task[bytes] = asyncio.ensure_future(reader.read(_READ_SIZE))

    def gone(self) -> bool:
        """True once the client has closed or reset the connection."""
        if not self._read.done() or self._read.cancelled():
            return False
        return self._read.exception() is not None or self._read.result() == b""

    async def left_during(self, delay_s: float) -> bool:
        """Wait ``delay_s`` (returning early if the client leaves); True if it has left."""
        if delay_s > 0 and self._read.done():
            await asyncio.sleep(delay_s)
        elif delay_s > 0:
            await asyncio.wait({self._read}, timeout=delay_s)
        return self.gone()

    async def held_by(self, gate: Gate) -> bool:
        """Wait until ``gate`` opens; False if the client left first."""
        passed = asyncio.ensure_future(gate.passed())
        await asyncio.wait({passed, self._read}, return_when=asyncio.FIRST_COMPLETED)
        if not passed.done() and not self.gone():
            await passed  # the client sent bytes (its next request) but is still there
        if not passed.done():
            passed.cancel()
            await asyncio.wait({passed})
            return False
        return not self.gone()

    async def until_gone(self) -> None:
        """Wait, without limit, until the client leaves (``FakeGroq.stop`` cancels the wait)."""
        await asyncio.wait({self._read})
        if not self.gone():
            await asyncio.Event().wait()

    async def stop(self) -> bytes:
        """Stop watching; returns bytes the client sent meanwhile (start of its next request)."""
        self._read.cancel()
        await asyncio.wait({self._read})
        if self._read.cancelled() or self._read.exception() is not None:
            return b""
        return self._read.result()


class _Connection:
    """Serves the HTTP/1.1 requests of one client connection, one after another (keep-alive)."""

    def __init__(
        self, ledger: _Ledger, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._ledger = ledger
        self._reader = reader
        self._writer = writer
        self._pending = bytearray()

    async def serve(self) -> None:
        """Answer requests until the client or a reply closes the connection."""
        self._ledger.count_connection()
        try:
            await self._serve_requests()
        except (ConnectionError, _MalformedRequestError):
            pass  # the client went away between requests, or spoke gibberish: just hang up
        except Exception as exc:  # a bug in the fake must fail assert_complete(), not crash
            self._ledger.record_error(repr(exc))
        finally:
            self._writer.close()

    async def _serve_requests(self) -> None:
        """The keep-alive loop."""
        while (request := await self._read_request()) is not None:
            reply = self._ledger.take_reply(request)
            keep_alive = await self._send(reply, model=str(request.body.get("model", "unknown")))
            if not keep_alive or request.headers.get("connection", "").lower() == "close":
                return

    async def _fill(self) -> bool:
        """Read more bytes into the buffer; False at end of stream."""
        data = await self._reader.read(_READ_SIZE)
        self._pending += data
        return bool(data)

    async def _read_request(self) -> RecordedRequest | None:
        """The next request, or None when the client closed the connection."""
        while _HEAD_END not in self._pending:
            if len(self._pending) > _MAX_HEAD_BYTES:
                raise _MalformedRequestError("request head too large")
            if not await self._fill():
                return None
        head, _, rest = bytes(self._pending).partition(_HEAD_END)
        method, path, headers = _parse_head(head)
        length = _content_length(headers)
        self._pending = bytearray(rest)
        while len(self._pending) < length:
            if not await self._fill():
                return None
        raw_body = bytes(self._pending[:length])
        del self._pending[:length]
        return RecordedRequest(method, path, headers, _json_object(raw_body), raw_body)

    async def _write(self, data: bytes) -> None:
        """Send bytes, waiting for the socket buffer to drain."""
        self._writer.write(data)
        await self._writer.drain()

    async def _send(self, reply: Reply, *, model: str) -> bool:
        """Send one reply; returns whether the connection can serve another request."""
        if isinstance(reply, ErrorReply):
            await self._send_error(reply)
            return True
        return await self._send_stream(reply, _ChunkFactory(model=model))

    async def _send_error(self, reply: ErrorReply) -> None:
        """A JSON error response with Content-Length."""
        body = orjson.dumps(dict(reply.body))
        headers = {
            "content-type": "application/json",
            "content-length": str(len(body)),
            "x-request-id": _new_request_id(),
            **reply.headers,
        }
        await self._write(_response_head(reply.status, list(headers.items())) + body)

    async def _send_stream(self, reply: StreamReply, chunks: _ChunkFactory) -> bool:
        """An SSE response with chunked transfer-encoding; returns keep-alive."""
        headers = [
            ("content-type", "text/event-stream"),
            ("transfer-encoding", "chunked"),
            ("cache-control", "no-cache"),
            ("x-request-id", chunks.request_id),
        ]
        await self._write(_response_head(200, headers))
        watch = _ClientWatch(self._reader)
        try:
            if not await self._send_frames(reply, chunks, watch):
                self._ledger.count_disconnect()
                return False
            return await self._end_stream(reply.end, watch)
        finally:
            self._pending += await watch.stop()

    async def _send_frames(
        self, reply: StreamReply, chunks: _ChunkFactory, watch: _ClientWatch
    ) -> bool:
        """Send every event before the ending; False if the client left meanwhile."""
        for index, (delay_s, frame) in enumerate(_stream_frames(reply, chunks)):
            # Frame 0 is the opening chunk; delta number n is frame n + 1.
            gated = reply.gate is not None and index == reply.gate_at + 1
            if gated and reply.gate is not None and not await watch.held_by(reply.gate):
                return False
            if await watch.left_during(delay_s):
                return False
            try:
                await self._write(_http_chunk(frame))
            except ConnectionError:
                return False
        return True

    async def _end_stream(self, end: StreamEnd, watch: _ClientWatch) -> bool:
        """Finish the body as ``end`` says; returns keep-alive."""
        if end is StreamEnd.CUT:
            return False  # serve() closes the socket without the last chunk
        if end is StreamEnd.BAD_FRAMING:
            with contextlib.suppress(ConnectionError):
                await self._write(b"not a chunk size\r\n\r\n")
            return False
        if end is StreamEnd.STALL:
            await watch.until_gone()
            self._ledger.count_disconnect()
            return False
        try:
            await self._write(_LAST_CHUNK)
        except ConnectionError:
            self._ledger.count_disconnect()
            return False
        return True


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Request line and headers (names lowercased)."""
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _MalformedRequestError(f"bad request line {request_line!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise _MalformedRequestError(f"bad header line {line!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return parts[0], parts[1], headers


def _content_length(headers: Mapping[str, str]) -> int:
    """The request body length (the SDK always sends Content-Length)."""
    try:
        return int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise _MalformedRequestError("bad content-length") from exc


def _json_object(raw_body: bytes) -> dict[str, Any]:
    """The body parsed as a JSON object, or {}."""
    try:
        parsed = orjson.loads(raw_body) if raw_body else {}
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# --------------------------------------------------------------------------- the server


class FakeGroq:
    """Groq's chat-completions endpoint on ``127.0.0.1:<free port>``, in a background thread.

    Script replies with :meth:`script`; inspect with :attr:`requests`, :attr:`disconnects`,
    :meth:`wait_for_requests`, :meth:`wait_for_disconnect`; finish with :meth:`assert_complete`.
    The ``wait_*`` methods block the calling thread: from async code running the client in the
    same loop, call them via ``asyncio.to_thread`` unless the awaited event has already happened.
    """

    def __init__(self) -> None:
        self._ledger = _Ledger()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connection_tasks: set[asyncio.Task[Any]] = set()
        self._base_url: str | None = None

    # ---- lifecycle

    def start(self) -> None:
        """Bind ``127.0.0.1:0`` and serve from a background thread."""
        if self._thread is not None:
            raise RuntimeError("fake groq: already started")
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="fake-groq", daemon=True
        )
        self._thread.start()
        port = ready.result(timeout=_THREAD_TIMEOUT_S)
        self._base_url = f"http://{_HOST}:{port}"

    def stop(self) -> None:
        """Close every connection and the listening socket, then end the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(_THREAD_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_THREAD_TIMEOUT_S)
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``; pass it as the SDK's ``base_url``."""
        if self._base_url is None:
            raise RuntimeError("fake groq: not started")
        return self._base_url

    # ---- scripting and inspection

    def answer_model(self, model: str, reply: Reply) -> None:
        """Answer every request for ``model`` with ``reply`` (not consumed, not in the script)."""
        self._ledger.answer_model(model, reply)

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request consumes the next one, in order."""
        self._ledger.script(replies)

    def drop_script(self) -> list[Reply]:
        """Forget the scripted replies no request has taken yet (a test that scripts more than
        it knows will be asked for, and starts afresh); returns them."""
        return self._ledger.drop_script()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, except those answered by a standing reply (a copy)."""
        return self._ledger.snapshot().requests

    @property
    def background_requests(self) -> list[RecordedRequest]:
        """The requests answered by a standing reply (`answer_model`), in order (a copy)."""
        return self._ledger.snapshot().background_requests

    @property
    def disconnects(self) -> int:
        """How many times a client closed the connection while a streamed reply was being sent."""
        return self._ledger.snapshot().disconnects

    @property
    def unscripted(self) -> int:
        """How many requests arrived with no scripted reply (or for an unknown URL)."""
        return self._ledger.snapshot().unscripted

    @property
    def connections(self) -> int:
        """How many TCP connections clients opened (keep-alive reuse keeps this low)."""
        return self._ledger.snapshot().connections

    @property
    def unused_replies(self) -> list[Reply]:
        """Scripted replies no request has consumed yet."""
        return self._ledger.snapshot().unused_replies

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests have arrived; returns all of them."""
        state = self._ledger.wait_until(lambda s: len(s.requests) >= n, timeout, f"{n} request(s)")
        return state.requests

    def wait_for_disconnect(self, timeout: float = 5.0, *, count: int = 1) -> None:
        """Block until at least ``count`` mid-stream client disconnects have happened."""
        self._ledger.wait_until(lambda s: s.disconnects >= count, timeout, f"{count} disconnect(s)")

    def assert_complete(self) -> None:
        """Fail if scripted replies remain unused, a request was unscripted, or the fake broke."""
        state = self._ledger.snapshot()
        problems = []
        if state.unused_replies:
            kinds = ", ".join(_describe(reply) for reply in state.unused_replies)
            problems.append(
                f"{len(state.unused_replies)} scripted reply(ies) never requested: {kinds}"
            )
        if state.unscripted:
            problems.append(
                f"{state.unscripted} request(s) got no scripted reply ({UNSCRIPTED_MESSAGE})"
            )
        if state.errors:
            problems.append(f"internal errors: {state.errors}")
        if problems:
            raise AssertionError("fake groq: " + "; ".join(problems))

    # ---- server thread

    def _run(self, ready: concurrent.futures.Future[int]) -> None:
        """Thread body: start the server on a fresh loop, report the port, run until stopped."""
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._accept, _HOST, 0))
            ready.set_result(self._server.sockets[0].getsockname()[1])
        except BaseException as exc:  # start() re-raises it in the test thread
            ready.set_exception(exc)
            loop.close()
            return
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection, tracked so that stop() can cancel it."""
        task = asyncio.current_task()
        assert task is not None, "asyncio runs start_server callbacks in tasks"
        self._connection_tasks.add(task)
        try:
            await _Connection(self._ledger, reader, writer).serve()
        finally:
            self._connection_tasks.discard(task)

    async def _shutdown(self) -> None:
        """Stop listening and close every connection (cancelling stalled or slow replies)."""
        if self._server is not None:
            self._server.close()
        tasks = set(self._connection_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_THREAD_TIMEOUT_S)
        await asyncio.sleep(0)  # let the transports' close callbacks run before the loop stops

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Record asyncio's complaints (they would otherwise be logged as tracebacks)."""
        self._ledger.record_error(str(context.get("exception") or context.get("message")))


def _describe(reply: Reply) -> str:
    """A short name for a reply, for failure messages."""
    if isinstance(reply, ErrorReply):
        return f"error_reply({reply.status})"
    return f"stream({reply.end.value}, {len(reply.deltas)} deltas)"
