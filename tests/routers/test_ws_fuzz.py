"""Fuzzing of the WebSocket protocol: generated frame sequences against a real server.

Every example opens a new session on one server per test, sends a generated sequence of frames
(valid, malformed, binary, oversized, interleaved) and checks PROTOCOL.md's promises on all that
comes back. Which reply each frame must get is decided by an oracle written from PROTOCOL.md, not
by the server's own parser. See docs/fuzzing.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from app.protocol import MAX_CLIENT_ID_CHARS, ServerFrame
from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.server import RunningServer
from tests.support.waiting import wait_until

Frame = dict[str, Any]

# Small limits, so that generated frames cross them often without being slow to send.
WS_MAX_BYTES = 2048
MAX_MESSAGE_CHARS = 200
REPLY_TOKENS = ("Fuzzed", " ", "reply.")
REPLY_TEXT = "".join(REPLY_TOKENS)
SEQUENCE_EXAMPLES = 200
TOO_LARGE = 1009
SETTLE_TIMEOUT_S = 10.0

# Deterministic (`derandomize`) so that CI runs the same inputs every time; no example database,
# so nothing is written into the tree. One server serves every example of a test, on purpose.
FUZZ = settings(
    max_examples=SEQUENCE_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

server_frame_adapter: TypeAdapter[ServerFrame] = TypeAdapter(
    Annotated[ServerFrame, Field(discriminator="type")]
)


# ------------------------------------------------------------------------- the oracle


class Reply(Enum):
    """The reply PROTOCOL.md promises for one client frame (or the close it causes)."""

    PONG = "pong"
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    CANCEL = "cancel"  # `no_active_response` when idle, no frame of its own when a response runs
    CLOSE_TOO_LARGE = "close_too_large"


@dataclass(frozen=True)
class Message:
    """A well-formed `user.message`: its reply depends on the session's state."""

    text: str
    id: str | None


Expectation = Reply | Message


@dataclass(frozen=True)
class Outgoing:
    """One client frame as sent on the wire, with the reply it must get."""

    data: str | bytes
    expect: Expectation
    # A ping after which the client reads until every response so far has ended, so that a
    # sequence can hold several responses and not only `response_in_progress` refusals.
    settle: bool = False

    def __repr__(self) -> str:
        if self.settle:
            return "Outgoing(settle)"
        data = self.data if len(self.data) <= 80 else self.data[:60]
        more = f" +{len(self.data) - len(data)}" if len(data) < len(self.data) else ""
        return f"Outgoing({data!r}{more}, {self.expect})"


class _NotJson(ValueError):
    pass


def _finite_number(text: str) -> float:
    # A number that is infinite as a double is refused (as by any parser that reads doubles).
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(text)
    return value


def _reject_constant(text: str) -> None:
    raise _NotJson(text)  # NaN and Infinity are not JSON


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    return False


def parse_json(text: str) -> tuple[bool, object]:
    """(True, value) when `text` is one JSON value of valid Unicode; else (False, None)."""
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_number,
            parse_int=lambda digits: (_finite_number(digits), int(digits))[1],
        )
    except (ValueError, RecursionError):
        return False, None
    if _has_lone_surrogate(value):
        return False, None
    return True, value


def expectation_of(data: str | bytes) -> Expectation:
    """What PROTOCOL.md says the server answers to this frame."""
    size = len(data) if isinstance(data, bytes) else len(data.encode())
    if size > WS_MAX_BYTES:
        return Reply.CLOSE_TOO_LARGE
    if isinstance(data, bytes):
        return Reply.INVALID_EVENT
    is_json, value = parse_json(data)
    if not is_json:
        return Reply.INVALID_JSON
    return _expectation_of_value(value)


def _expectation_of_value(value: object) -> Expectation:
    if not isinstance(value, dict):
        return Reply.INVALID_EVENT
    kind = value.get("type")
    if kind == "ping" and isinstance(kind, str):
        return Reply.PONG
    if kind == "response.cancel" and isinstance(kind, str):
        return Reply.CANCEL
    if kind != "user.message" or not isinstance(kind, str):
        return Reply.INVALID_EVENT
    text, message_id = value.get("text"), value.get("id")
    if not isinstance(text, str):
        return Reply.INVALID_EVENT
    if message_id is not None and not (
        isinstance(message_id, str) and 1 <= len(message_id) <= MAX_CLIENT_ID_CHARS
    ):
        return Reply.INVALID_EVENT
    return Message(text=text, id=message_id)


# ------------------------------------------------------------------------- generators

CLIENT_TYPES = ("user.message", "response.cancel", "ping")
NEAR_MISS_TYPES = ("PING", "ping ", "user_message", "response.cancelled", "", "error", "pong")
REUSED_IDS = ("dup-1", "dup-2")

control_texts = st.text(st.characters(categories=["Cc"]), max_size=8)
whitespace_texts = st.text(" \t\n\r\u00a0\u2003\u3000\u200b\ufeff", max_size=8)
huge_texts = st.builds(
    lambda char, count: char * count,
    st.sampled_from(["a", "é", "😀", "\x01", " ", '"']),
    st.integers(MAX_MESSAGE_CHARS - 2, WS_MAX_BYTES + 16),
)
# Around MAX_MESSAGE_CHARS: the longest accepted message and the shortest refused one.
limit_texts = st.builds(
    lambda char, count: char * count,
    st.sampled_from(["a", "é", " b"]),
    st.integers(MAX_MESSAGE_CHARS // 2 - 1, MAX_MESSAGE_CHARS + 1),
)
texts = st.one_of(
    st.text(max_size=40), control_texts, whitespace_texts, limit_texts, huge_texts, st.just("hi")
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
client_ids = st.one_of(
    st.text(max_size=MAX_CLIENT_ID_CHARS + 6), st.sampled_from(REUSED_IDS), json_values
)
extra_fields = st.dictionaries(
    st.text(max_size=8).filter(lambda key: key not in {"type", "text", "id"}),
    json_values,
    max_size=3,
)


def _with_extras(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Frame]:
    frames = st.fixed_dictionaries(required, optional=optional)
    return st.builds(lambda frame, extra: {**extra, **frame}, frames, extra_fields)


user_messages = _with_extras(
    {"type": st.just("user.message"), "text": st.one_of(texts, texts, json_values)},
    {"id": client_ids},
)
cancels = _with_extras({"type": st.just("response.cancel")}, {})
pings = _with_extras({"type": st.just("ping")}, {})
any_type = st.one_of(st.sampled_from(CLIENT_TYPES + NEAR_MISS_TYPES), st.text(), json_values)
other_objects = _with_extras({}, {"type": any_type, "text": texts, "id": client_ids})
json_frames = st.one_of(user_messages, user_messages, cancels, pings, other_objects, json_values)


@st.composite
def _json_text(draw: st.DrawFn, values: st.SearchStrategy[object]) -> str:
    return json.dumps(draw(values), ensure_ascii=draw(st.booleans()))


@st.composite
def _broken_json(draw: st.DrawFn) -> str:
    text = draw(_json_text(json_frames))
    cut = draw(st.integers(0, max(len(text) - 1, 0)))
    return draw(
        st.sampled_from(
            [
                text[:cut],
                text + draw(st.sampled_from([",", "}", "]", "x", " 1"])),
                draw(st.sampled_from(["{", "[", ",", "'"])) + text,
                text.replace('"', "'"),
            ]
        )
    )


special_texts = st.sampled_from(
    ["", " ", "NaN", "Infinity", "-Infinity", "[1,]", "1e400", '"\\ud800"', '{"type":"ping",}']
)
wire_texts = st.one_of(
    _json_text(json_frames),
    _json_text(json_frames),
    _json_text(json_frames),
    _broken_json(),
    special_texts,
    st.text(max_size=40),
)
wire_bytes = st.one_of(
    st.binary(max_size=64),
    _json_text(pings).map(str.encode),
    st.integers(WS_MAX_BYTES - 4, WS_MAX_BYTES + 4).map(lambda size: b"\x00" * size),
)
# Plain messages a person would send, so that responses run while the other frames arrive.
chat_messages = _json_text(
    st.fixed_dictionaries(
        {"type": st.just("user.message"), "text": st.text(min_size=1, max_size=20) | limit_texts},
        optional={"id": st.one_of(st.sampled_from(REUSED_IDS), st.text(min_size=1, max_size=8))},
    )
)
outgoing = st.one_of(chat_messages, wire_texts, chat_messages, wire_texts, wire_bytes).map(
    lambda data: Outgoing(data, expectation_of(data))
)
SETTLE = Outgoing('{"type": "ping"}', Reply.PONG, settle=True)


def _settle_between(rounds: list[list[Outgoing]]) -> list[Outgoing]:
    return [item for frames in rounds for item in [*frames, SETTLE]][:-1]


# Rounds of frames sent back to back (responses, cancels and refusals interleave), with a pause
# between rounds until every response so far has ended.
sequences = st.lists(st.lists(outgoing, min_size=1, max_size=4), max_size=4).map(_settle_between)


# ------------------------------------------------------------------------- the exchange


@dataclass
class Transcript:
    """Everything one example sent and received."""

    ready: Frame
    sent: list[Outgoing]
    frames: list[Frame] = field(default_factory=list)
    close_code: int | None = None


async def _recv(connection: ClientConnection, timeout: float = SETTLE_TIMEOUT_S) -> Frame:
    raw = await asyncio.wait_for(connection.recv(), timeout)
    assert isinstance(raw, str), f"the server sent a binary frame: {raw!r}"
    # Each frame must be one of the protocol's server frames, field types included.
    model = server_frame_adapter.validate_json(raw, strict=True)
    frame: Frame = json.loads(raw)
    unknown = set(frame) - set(type(model).model_fields)
    assert not unknown, f"fields outside the protocol: {unknown} in {frame}"
    return frame


def _settled(transcript: Transcript) -> bool:
    """The final pong came, and every accepted message's response has started and ended."""
    if transcript.sent[-1].expect is Reply.CLOSE_TOO_LARGE:
        return False  # read on: the server must close the connection
    frames = transcript.frames
    expected_pongs = sum(item.expect is Reply.PONG for item in transcript.sent)
    kinds = [frame["type"] for frame in frames]
    acked = {frame["seq"] for frame in frames if frame["type"] == "user.message"}
    started, done = kinds.count("response.started"), kinds.count("response.done")
    return kinds.count("pong") >= expected_pongs and started == done == len(acked)


async def exchange(server: RunningServer, items: list[Outgoing]) -> Transcript:
    """Send `items` on a new session, then a ping; read until everything has been answered."""
    async with server.connect() as client:
        transcript = Transcript(ready=await _recv(client.connection), sent=[])
        try:
            for item in [*items, SETTLE]:
                transcript.sent.append(item)
                await client.connection.send(item.data)
                if item.expect is Reply.CLOSE_TOO_LARGE or item.settle:
                    while not _settled(transcript):
                        transcript.frames.append(await _recv(client.connection))
                if item.expect is Reply.CLOSE_TOO_LARGE:
                    break
        except ConnectionClosed as closed:
            transcript.close_code = closed.rcvd.code if closed.rcvd else None
    return transcript


# ------------------------------------------------------------------------- the checks

DIRECT_REPLIES = {"pong", "error", "user.message"}


@dataclass
class _ReplyCursor:
    """Walks the direct replies (pong, error, acknowledgement) in the order they came."""

    replies: list[Frame]
    position: int = 0

    def peek(self) -> Frame | None:
        return self.replies[self.position] if self.position < len(self.replies) else None

    def take(self, why: Outgoing) -> Frame:
        reply = self.peek()
        assert reply is not None, f"no reply to {why.data!r}"
        self.position += 1
        return reply


def _is_error(frame: Frame | None, code: str) -> bool:
    return frame is not None and frame["type"] == "error" and frame["code"] == code


def check_direct_replies(transcript: Transcript) -> list[Frame]:
    """Each frame got the reply the oracle says, in order; return the accepted messages."""
    cursor = _ReplyCursor([f for f in transcript.frames if f["type"] in DIRECT_REPLIES])
    stored: dict[str, Frame] = {}
    accepted: list[Frame] = []
    for item in transcript.sent:
        expect = item.expect
        if expect is Reply.CLOSE_TOO_LARGE:
            break
        if expect is Reply.CANCEL:
            # Idle for sure before the first accepted message; later a response may be running.
            if not accepted or _is_error(cursor.peek(), "no_active_response"):
                reply = cursor.take(item)
                assert _is_error(reply, "no_active_response"), f"{item.data!r} got {reply}"
        elif isinstance(expect, Message):
            _check_message_reply(cursor.take(item), expect, stored, accepted)
        else:
            reply = cursor.take(item)
            wanted = {"type": "pong"} if expect is Reply.PONG else {"code": expect.value}
            assert wanted.items() <= reply.items(), f"{item.data!r} got {reply}"
    assert cursor.peek() is None, f"replies nobody asked for: {cursor.replies[cursor.position :]}"
    return accepted


def _check_message_reply(
    reply: Frame, message: Message, stored: dict[str, Frame], accepted: list[Frame]
) -> None:
    if message.id is not None and message.id in stored:
        assert reply == stored[message.id], "a resent id must be acknowledged again, unchanged"
    elif _is_error(reply, "response_in_progress"):
        assert accepted, "response_in_progress although no response was ever started"
    elif not message.text.strip() or "\x00" in message.text:
        # NUL is refused too: PostgreSQL cannot store it (app/services/conversation.py).
        assert _is_error(reply, "invalid_event"), reply
    elif len(message.text) > MAX_MESSAGE_CHARS:
        assert _is_error(reply, "message_too_large"), reply
    else:
        assert reply["type"] == "user.message", reply
        assert reply["text"] == message.text
        assert message.id is None or reply["id"] == message.id
        stored[reply["id"]] = reply
        accepted.append(reply)


def check_responses(transcript: Transcript, accepted: list[Frame]) -> None:
    """One `response.done` per `response.started`, deltas in between, each after its ack."""
    texts: dict[str, list[str]] = {}
    done: dict[str, Frame] = {}
    for frame in transcript.frames:
        if frame["type"] not in {"response.started", "response.delta", "response.done"}:
            continue
        response_id: str = frame["response_id"]
        if frame["type"] == "response.started":
            assert response_id not in texts, f"started twice: {response_id}"
            texts[response_id] = []
            continue
        assert response_id in texts, f"no response.started before {frame}"
        assert response_id not in done, f"after its response.done: {frame}"
        if frame["type"] == "response.delta":
            texts[response_id].append(frame["text"])
        else:
            done[response_id] = frame
    if transcript.close_code is None:
        assert len(texts) == len(accepted), "every accepted message starts exactly one response"
        assert done.keys() == texts.keys(), "a response.started without its response.done"
    else:  # closed (1009) before the last responses could say anything; the store is checked
        assert len(texts) <= len(accepted), "more responses than accepted messages"
    for response_id, frame in done.items():
        assert frame["text"] == "".join(texts[response_id])
        assert frame["status"] in {"completed", "cancelled"}, frame
        assert frame["status"] == "cancelled" or frame["text"] == REPLY_TEXT
    _check_each_start_follows_its_ack(transcript.frames, accepted)


def _check_each_start_follows_its_ack(frames: list[Frame], accepted: list[Frame]) -> None:
    accepted_ids = {id(frame) for frame in accepted}
    waiting = False  # an acknowledged message whose response has not started yet
    for frame in frames:
        if id(frame) in accepted_ids:
            assert not waiting, "two acknowledgements without a response.started between"
            waiting = True
        elif frame["type"] == "response.started":
            assert waiting, "a response.started before its message was acknowledged"
            waiting = False


def check_seqs(transcript: Transcript, accepted: list[Frame]) -> list[int]:
    """New seqs (acks and dones) come in order, from 1, without gaps; return them."""
    accepted_ids = {id(frame) for frame in accepted}
    seqs = [
        frame["seq"]
        for frame in transcript.frames
        if id(frame) in accepted_ids or frame["type"] == "response.done"
    ]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    return seqs


async def check_stored(server: RunningServer, session_id: str, accepted: list[Frame]) -> None:
    """The store ends with exactly the acknowledged messages and one answer to each, gapless."""

    def stored_rows() -> list[tuple[int, str]]:
        with server.db() as db:
            rows = db.execute(
                "select seq, type from session_events where session_id = ? order by seq",
                (session_id,),
            ).fetchall()
        return [(row["seq"], row["type"]) for row in rows]

    rows: list[tuple[int, str]] = []

    async def answers_stored() -> bool:
        rows[:] = await asyncio.to_thread(stored_rows)
        return sum(kind == "assistant.message" for _, kind in rows) >= len(accepted)

    await wait_until(answers_stored, SETTLE_TIMEOUT_S, what="every response to be stored")
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1)), rows
    assert [kind for _, kind in rows] == ["user.message", "assistant.message"] * len(accepted)
    acked_seqs = [frame["seq"] for frame in accepted]
    assert [seq for seq, kind in rows if kind == "user.message"] == acked_seqs


def check_transcript(transcript: Transcript) -> list[Frame]:
    """Every promise that does not need the store; return the accepted messages."""
    assert transcript.ready["type"] == "session.ready"
    assert transcript.ready["resumed"] is False
    assert transcript.ready["events"] == []
    oversized = transcript.sent[-1].expect is Reply.CLOSE_TOO_LARGE
    # The only way to be closed in this test is a frame over WS_MAX_BYTES, and it must close.
    assert transcript.close_code == (TOO_LARGE if oversized else None), transcript.close_code
    accepted = check_direct_replies(transcript)
    check_responses(transcript, accepted)
    check_seqs(transcript, accepted)
    return accepted


# ------------------------------------------------------------------------- the tests


def _count_what_happened(transcript: Transcript, accepted: list[Frame]) -> None:
    """Statistics for `--hypothesis-show-statistics`: which paths the examples reached."""
    event(f"accepted messages: {min(len(accepted), 3)}{'+' if len(accepted) > 3 else ''}")
    if transcript.close_code is not None:
        event(f"closed with {transcript.close_code}")
    acks = [frame for frame in transcript.frames if frame["type"] == "user.message"]
    if len(acks) > len(accepted):
        event("a resent id acknowledged again")
    for frame in transcript.frames:
        if frame["type"] == "error":
            event(f"error {frame['code']}")
        elif frame["type"] == "response.done":
            event(f"response {frame['status']}")


@pytest.fixture
def fuzz_server(start_server: StartServer, fake_groq: FakeGroq) -> RunningServer:
    """One server for all examples: small limits, no flood limit, a model that always answers."""
    fake_groq.answer_model("test-model", text_reply(*REPLY_TOKENS))
    return start_server(
        ws_max_bytes=WS_MAX_BYTES,
        max_message_chars=MAX_MESSAGE_CHARS,
        max_messages_per_minute=1_000_000,
    )


class ErrorRecords(logging.Handler):
    """Collects the server's ERROR log records: an exception in the app fails the example."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        taken = [f"{record.name}: {self.format(record)}" for record in self.records]
        self.records.clear()
        return taken


@pytest.fixture
def server_errors() -> Iterator[ErrorRecords]:
    """ERROR records of the app (root logger) and of uvicorn (which does not propagate)."""
    handler = ErrorRecords()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.fixture
def examples_run() -> Iterator[list[int]]:
    """Counts the examples a test ran and the frames they sent (docs/fuzzing.md reports them)."""
    counted: list[int] = []
    yield counted
    print(f"\nWebSocket fuzz examples: {len(counted)}, frames sent: {sum(counted)}")


@FUZZ
@given(items=sequences)
async def test_any_frame_sequence_keeps_the_protocol(
    fuzz_server: RunningServer,
    server_errors: ErrorRecords,
    examples_run: list[int],
    items: list[Outgoing],
) -> None:
    note(f"sent: {items!r}")
    transcript = await exchange(fuzz_server, items)
    examples_run.append(len(transcript.sent))
    accepted = check_transcript(transcript)
    _count_what_happened(transcript, accepted)
    await check_stored(fuzz_server, transcript.ready["session_id"], accepted)
    assert server_errors.take() == [], "the server logged errors"
