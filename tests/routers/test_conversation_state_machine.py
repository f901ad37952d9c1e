"""A state-machine test of tool approval and double texting (issue 15, item 3) against a real
server: random sequences of messages (`while_busy` reject / enqueue / interrupt), approval
answers (for pending, answered and unknown calls), cancels, disconnects with a resume and waits,
with the fake model answering in text, held text, calls that need approval, ordinary calls or a
mix of both. After each example: every request the fake received is one Groq accepts, the stored
history is whole and each message is answered once in order, and the frames kept the rules.

Driven by `st.data()` in an async test rather than `hypothesis.stateful`: the rules await a
WebSocket client and a server running in the test's own event loop, which the stateful API's
synchronous rules cannot do without a second loop per machine. Each step is `note`d, so a
failing example prints its sequence; the draws shrink as a state machine's would.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterator
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from app.services.approvals import DENIED, TIMED_OUT
from tests.conftest import BACKGROUND_SUMMARY, BACKGROUND_SUMMARY_MODEL, StartServer
from tests.database.conftest import throwaway_database
from tests.fakes.groq_server import (
    FakeGroq,
    Gate,
    Reply,
    ToolCallSpec,
    gated_reply,
    text_reply,
    tool_call_reply,
)
from tests.support.client import Frame, WsClient
from tests.support.rest import get_events, get_session
from tests.support.server import RunningServer

# Each example is a new session on one of the test's two servers; ~25 examples of up to 14
# steps keep each test well under a minute.
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_STEPS = 14
MAX_QUEUED = 2
SHORT_APPROVAL_S = 0.6
LONG_APPROVAL_S = 600.0
# An approval this close to its expiry may expire before the server reads the answer.
EXPIRY_MARGIN_S = 0.3
WAIT_S = 5.0

REPLY_KINDS = ("text", "held", "approval", "approvals", "tool", "mix")
ACTIONS = (
    "send",
    "send",
    "send",
    "answer",
    "answer",
    "answer_other",
    "cancel",
    "release",
    "wait",
    "reconnect",
)


@dataclass
class Connection:
    """What one WebSocket connection received."""

    client: WsClient
    frames: list[Frame] = field(default_factory=list)
    # Responses this connection saw start (or joined live), with the text they had then.
    started: dict[str, str] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)


class Driver:
    """One example: a fresh server and fake model, one session, and the client's view of it."""

    def __init__(self, server: RunningServer, fake: FakeGroq, *, short_expiry: bool) -> None:
        self.server = server
        self.fake = fake
        self.short_expiry = short_expiry
        self.stack = AsyncExitStack()
        self.http = httpx.AsyncClient(base_url=server.http_url)
        self.conn: Connection | None = None
        self.connections: list[Connection] = []
        self.session_id = ""
        self.gates: list[Gate] = []
        # This example's requests (the fake serves every example of a test).
        self.first_request = len(fake.requests)
        self.counter = itertools.count(1)
        # The client's view, merged from frames and `session.ready` events.
        self.stored: dict[int, Frame] = {}
        self.acked: dict[str, Frame] = {}
        self.response_ids: set[str] = set()
        self.done_ids: set[str] = set()
        self.pending: dict[str, datetime] = {}
        self.answered: dict[str, tuple[bool, str | None]] = {}

    # -- frames ---------------------------------------------------------------------------

    @property
    def client(self) -> WsClient:
        assert self.conn is not None
        return self.conn.client

    def observe(self, frame: Frame) -> None:
        conn = self.conn
        assert conn is not None
        conn.frames.append(frame)
        kind = frame["type"]
        if "seq" in frame:
            self.remember(frame)
        if kind == "response.started":
            assert frame["response_id"] not in conn.started, f"started twice: {frame}"
            conn.started[frame["response_id"]] = ""
            self.response_ids.add(frame["response_id"])
        elif kind == "response.done":
            rid = frame["response_id"]
            assert rid in conn.started, f"response.done without response.started: {frame}"
            assert rid not in conn.done, f"a second response.done for {rid}"
            conn.done[rid] = frame["seq"]
        elif kind == "error":
            assert frame["code"] not in {"internal_error", "store_unavailable"}, frame

    def remember(self, frame: Frame) -> None:
        """A stored event, from a frame or from `session.ready.events`."""
        kind = "assistant.message" if frame["type"] == "response.done" else frame["type"]
        seq = frame["seq"]
        known = self.stored.get(seq)
        assert known is None or known["type"] == kind, f"seq {seq} is {known} and {frame}"
        self.stored[seq] = {**frame, "type": kind}
        if kind == "user.message":
            self.acked[frame["id"]] = frame
        elif kind == "assistant.message":
            self.response_ids.add(frame["response_id"])
            self.done_ids.add(frame["response_id"])
        elif kind == "tool.approval_requested":
            if frame["call_id"] not in self.answered:
                self.pending.setdefault(
                    frame["call_id"], datetime.fromisoformat(frame["expires_at"])
                )
        elif kind == "tool.approval":
            self.answered[frame["call_id"]] = (frame["approved"], frame.get("reason"))
            self.pending.pop(frame["call_id"], None)
        elif kind == "tool.result":
            self.pending.pop(frame["call_id"], None)

    async def next_frame(self, timeout: float = WAIT_S) -> Frame:
        frame = await self.client.recv(timeout)
        self.observe(frame)
        return frame

    async def until(self, wanted: Any, *, timeout: float = WAIT_S, what: str) -> Frame:
        """Read frames until one for which `wanted(frame)` holds."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await self.next_frame(timeout)
                    if wanted(frame):
                        return frame
        except TimeoutError as e:
            raise AssertionError(f"no frame for {what} within {timeout:g} s") from e

    async def drain(self, quiet_s: float = 0.02) -> None:
        """Read what has arrived (until nothing comes for `quiet_s`)."""
        while True:
            try:
                await self.next_frame(quiet_s)
            except TimeoutError:
                return

    # -- what the client can tell ---------------------------------------------------------

    @property
    def unstarted(self) -> int:
        """Acknowledged messages whose response the client has not seen start: at least as
        many as the server's queue holds (each message gets one response, acks come first)."""
        return len(self.acked) - len(self.response_ids)

    @property
    def running(self) -> set[str]:
        return self.response_ids - self.done_ids

    @property
    def busy(self) -> bool:
        return bool(self.running) or self.unstarted > 0

    def surely_pending(self, call_id: str) -> bool:
        expires_at = self.pending.get(call_id)
        if expires_at is None:
            return False
        left = (expires_at - datetime.now(UTC)).total_seconds()
        return left > EXPIRY_MARGIN_S

    # -- the steps ------------------------------------------------------------------------

    def script(self, kinds: list[str]) -> None:
        """The model's replies for one message: tool rounds, then text."""
        replies: list[Reply] = []
        for kind in kinds:
            n = next(self.counter)
            approval = ToolCallSpec(
                "update_user_plan", {"user_id": "123", "plan": "team"}, id=f"call-{n}-a"
            )
            ordinary = ToolCallSpec("calculate", {"expression": "6*7"}, id=f"call-{n}-c")
            if kind == "text":
                replies.append(text_reply(f"answer-{n} ", "done"))
            elif kind == "held":
                gate = Gate()
                self.gates.append(gate)
                replies.append(gated_reply(f"held-{n} ", after=["rest"], gate=gate))
            elif kind == "approval":
                replies.append(tool_call_reply(approval))
            elif kind == "approvals":
                second = ToolCallSpec(
                    "update_user_plan", {"user_id": "456", "plan": "pro"}, id=f"call-{n}-b"
                )
                replies.append(tool_call_reply(approval, second))
            elif kind == "tool":
                replies.append(tool_call_reply(ordinary))
            else:
                replies.append(tool_call_reply(ordinary, approval))
        self.fake.script(*replies)

    async def send(self, while_busy: str, kinds: list[str]) -> None:
        self.script(kinds)
        was_busy = self.busy
        message_id = f"m{next(self.counter)}"
        await self.client.send(
            {
                "type": "user.message",
                "id": message_id,
                "text": f"question {message_id}",
                "while_busy": while_busy,
            }
        )
        answer = await self.until(
            lambda f: (
                (f["type"] == "user.message" and f["id"] == message_id) or f["type"] == "error"
            ),
            what=f"the answer to {message_id}",
        )
        outcome = answer.get("code") or ("queued" if answer.get("queued") else "taken")
        note(f"  -> {answer['type']} {outcome}")
        hypothesis.event(f"{while_busy} while {'busy' if was_busy else 'idle'}: {outcome}")
        if answer["type"] == "error":
            code = answer["code"]
            if code == "response_in_progress":
                assert while_busy == "reject", answer
                assert self.busy, answer
            elif code == "queue_full":
                assert while_busy == "enqueue", answer
                assert self.unstarted >= MAX_QUEUED, f"queue_full, {self.unstarted} unstarted"
            else:
                raise AssertionError(f"unexpected refusal {answer}")
            return
        self.session_id = self.client.session_id
        if answer.get("queued"):
            assert while_busy == "enqueue", answer
        if while_busy == "interrupt":
            conn = self.conn
            assert conn is not None
            unfinished = set(conn.started) - set(conn.done)
            assert not unfinished, f"the interrupting message was acked before {unfinished} ended"

    async def answer(self, call_id: str, *, approved: bool, reason: str | None) -> None:
        frame: Frame = {"type": "tool.approval", "call_id": call_id, "approved": approved}
        if reason is not None:
            frame["reason"] = reason
        earlier = self.answered.get(call_id)
        surely_pending = self.surely_pending(call_id)
        await self.client.send(frame)
        reply = await self.until(
            lambda f: (
                (f["type"] == "tool.approval" and f["call_id"] == call_id) or (f["type"] == "error")
            ),
            what=f"the answer to the approval of {call_id}",
        )
        note(f"  -> {reply['type']} {reply.get('code', '')}")
        hypothesis.event(f"approval: {reply.get('code', 'acknowledged')}")
        if reply["type"] == "error":
            assert reply["code"] == "approval_not_pending", reply
            assert not surely_pending, f"{call_id} was pending: {reply}"
            assert earlier is None or earlier != (approved, reason), "a same answer was refused"
            return
        assert (reply["approved"], reply.get("reason")) == (approved, reason), reply
        if earlier is not None:
            assert earlier == (approved, reason), f"a different answer to {call_id} was taken"

    async def cancel(self) -> None:
        was_busy = self.busy
        await self.client.send({"type": "response.cancel"})
        reply = await self.until(
            lambda f: f["type"] == "response.done" or f["type"] == "error", what="the cancel"
        )
        note(f"  -> {reply['type']} {reply.get('code') or reply.get('status')}")
        if reply["type"] == "error":
            assert reply["code"] == "no_active_response", reply
        else:
            assert was_busy, f"a response.done after a cancel while idle: {reply}"

    def release(self) -> None:
        for gate in self.gates:
            gate.open()

    async def wait(self) -> None:
        """Wait for the current response to end (unless it waits for a person's answer)."""
        if (self.pending and not self.short_expiry) or not self.running:
            return
        self.release()
        current = sorted(self.running)
        timeout = WAIT_S + (SHORT_APPROVAL_S if self.short_expiry else 0)
        long_wait = not self.short_expiry
        await self.until(
            lambda f: (
                (f["type"] == "response.done" and f["response_id"] in current)
                or (long_wait and f["type"] == "tool.approval_requested")
            ),
            timeout=timeout,
            what="the end of the response",
        )

    async def connect(self, query: str = "") -> Frame:
        client = await self.stack.enter_async_context(self.server.connect(query))
        self.conn = Connection(client)
        self.connections.append(self.conn)
        ready = await self.next_frame()
        assert ready["type"] == "session.ready", ready
        client.session_id = ready["session_id"]
        return ready

    async def reconnect(self, *, after_last: bool, release: bool) -> None:
        await self.stack.aclose()
        if release:
            self.release()
        after_seq = max(self.stored, default=0) if after_last else 0
        ready = await self.connect(f"session_id={self.session_id}&after_seq={after_seq}")
        assert ready["resumed"] is True, ready
        assert ready["session_id"] == self.session_id, ready
        seqs = [event["seq"] for event in ready["events"]]
        assert seqs == list(range(after_seq + 1, after_seq + 1 + len(seqs))), seqs
        for event in ready["events"]:
            self.remember(event)
        live = ready.get("live_response")
        conn = self.conn
        assert conn is not None
        if live is not None:
            conn.started[live["response_id"]] = live["text"]
            self.response_ids.add(live["response_id"])
        # The server's word on what waits now; only an expiry may have ended a wait meanwhile.
        listed = set(ready["pending_approvals"])
        assert listed <= set(self.pending), f"pending {listed}, client saw {self.pending}"
        for call_id in set(self.pending) - listed:
            assert not self.surely_pending(call_id), f"{call_id} is not in {ready}"
            del self.pending[call_id]
        note(f"  -> ready: {len(seqs)} events, live {live}, pending {ready['pending_approvals']}")

    async def settle(self) -> None:
        """Answer what waits and let every response and queued message end."""
        self.release()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20.0
        while loop.time() < deadline:
            await self.drain()
            if len(self.fake.unused_replies) < 2:
                self.script(["text", "text"])
            for call_id in list(self.pending):
                # With the short timeout, what waits is left to expire.
                if not self.short_expiry and call_id not in self.answered:
                    await self.answer(call_id, approved=True, reason=None)
            session = await get_session(self.http, self.session_id)
            if not self.busy and not self.pending and not session["pending_approvals"]:
                assert session["queue_length"] == 0, session
                return
            with suppress(TimeoutError):
                await self.next_frame(0.5)
        raise AssertionError(f"the session did not settle: {await self._describe()}")

    async def _describe(self) -> str:
        events = await get_events(self.http, self.session_id)
        return "\n".join(str(e) for e in events)

    # -- the invariants -------------------------------------------------------------------

    async def check(self) -> None:
        events = await get_events(self.http, self.session_id, "limit=1000")
        note("stored:\n" + "\n".join(_short(e) for e in events))
        for e in events:
            if e["type"] == "tool.result" and not e["ok"]:
                hypothesis.event(f"a tool result: {e['error']}")
        check_stored_history(events, acked=set(self.acked))
        for seq, seen in self.stored.items():
            stored = events[seq - 1]
            assert stored["type"] == seen["type"], (seen, stored)
            for key in ("id", "call_id", "response_id", "approved"):
                assert stored.get(key) == seen.get(key), (seen, stored)
        answers = answered_questions(events)
        texts = {
            e["text"]: e["response_id"]
            for e in events
            if e["type"] == "assistant.message" and e["text"]
        }
        for request in self.fake.requests[self.first_request :]:
            check_request(request.body["messages"], answers=answers, texts=texts)
        for conn in self.connections:
            check_frames(conn)
        final = self.connections[-1]
        assert set(final.started) <= set(final.done), (
            "a response of the last connection never ended"
        )

    async def close(self) -> None:
        await self.stack.aclose()
        await self.http.aclose()


def _short(event: Frame) -> str:
    keys = ("id", "queued", "call_id", "name", "approved", "ok", "error", "status", "text")
    rest = " ".join(f"{k}={event[k]!r}" for k in keys if event.get(k) not in (None, False))
    return f"{event['seq']:3} {event['type']} {event.get('response_id', '')} {rest}"


# -- invariants over the stored history -------------------------------------------------------


@dataclass
class Answers:
    """Which question each response answered, and the order the questions were answered in."""

    question_of: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


def answered_questions(events: list[Frame]) -> Answers:
    """Walk the log as the protocol says it goes: a message sent while nothing waits is
    answered next; a queued one waits for the answers before it; an interrupting message
    (not queued, right after the answer it cut short) goes before the queued ones."""
    answers = Answers()
    waiting: deque[str] = deque()
    current: str | None = None
    for index, event in enumerate(events):
        if event["type"] == "user.message":
            if event.get("queued") and (current is not None or waiting):
                waiting.append(event["id"])
                continue
            assert current is None, f"{event['id']} was stored before {current} was answered"
            current = event["id"]
            answers.order.append(current)
        elif event["type"] == "assistant.message":
            assert current is not None, f"an answer without a question: {event}"
            answers.question_of[event["response_id"]] = current
            current = None
            following = events[index + 1] if index + 1 < len(events) else None
            interrupting = (
                following is not None
                and following["type"] == "user.message"
                and not following.get("queued")
            )
            if waiting and not interrupting:
                current = waiting.popleft()
                answers.order.append(current)
    assert current is None, f"{current} was never answered"
    assert not waiting, f"{list(waiting)} were never answered"
    return answers


def check_stored_history(events: list[Frame], *, acked: set[str]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seqs with a gap"
    ids = [e["id"] for e in events if e["type"] == "user.message"]
    assert len(ids) == len(set(ids)), f"a message stored twice: {ids}"
    assert acked == set(ids), f"acknowledged {sorted(acked)}, stored {sorted(ids)}"
    answers = answered_questions(events)
    assert sorted(answers.order) == sorted(ids), "a message answered twice or never"
    ended: set[str] = set()
    calls: dict[str, Frame] = {}
    results: dict[str, Frame] = {}
    requested: dict[str, Frame] = {}
    approvals: dict[str, Frame] = {}
    for event in events:
        kind, rid = event["type"], str(event.get("response_id"))
        if kind in ("tool.call", "tool.result", "tool.approval_requested"):
            assert rid not in ended, f"{kind} after its response ended: {event}"
        if kind == "assistant.message":
            assert rid not in ended, f"two answers of {rid}"
            ended.add(rid)
        elif kind == "tool.call":
            assert event["call_id"] not in calls, f"a call id twice: {event}"
            calls[event["call_id"]] = event
        elif kind == "tool.result":
            assert event["call_id"] in calls, f"a result without its call: {event}"
            assert event["call_id"] not in results, f"a second result: {event}"
            results[event["call_id"]] = event
        elif kind == "tool.approval_requested":
            call = calls.get(event["call_id"])
            assert call is not None, f"no call: {event}"
            assert call["response_id"] == rid, f"a call of another response: {event}"
            assert event["call_id"] not in results, f"asked after its result: {event}"
            requested[event["call_id"]] = event
        elif kind == "tool.approval":
            assert event["call_id"] in requested, f"an answer nobody asked for: {event}"
            assert event["call_id"] not in approvals, f"answered twice: {event}"
            assert event["call_id"] not in results, f"answered after its result: {event}"
            approvals[event["call_id"]] = event
    assert set(results) == set(calls), f"calls without a result: {set(calls) - set(results)}"
    for call_id, call in calls.items():
        assert call["response_id"] in ended, f"a call of a response that never ended: {call}"
        result = results[call_id]
        if call_id in requested:
            _check_decided_call(result, approvals.get(call_id))
        else:
            assert result["ok"] or result.get("error") == "cancelled", result


def _check_decided_call(result: Frame, approval: Frame | None) -> None:
    if result.get("error") == "cancelled":
        return
    if approval is None:
        assert result.get("error") == TIMED_OUT, result
    elif approval["approved"]:
        assert result["ok"], (approval, result)
    else:
        reason = approval.get("reason")
        assert result.get("error") == (f"{DENIED}: {reason}" if reason else DENIED), result


# -- invariants over what the model was sent ----------------------------------------------------


def check_request(messages: list[Frame], *, answers: Answers, texts: dict[str, str]) -> None:
    """A request Groq accepts, in conversation order: every tool call answered once, right
    after it; each question after the answer to the one before it."""
    assert messages[0]["role"] == "system", messages[0]
    open_calls: list[str] = []
    seen_calls: set[str] = set()
    questions: list[str] = []
    for message in messages[1:]:
        role = message["role"]
        assert role in ("user", "assistant", "tool"), message
        if role == "tool":
            assert message["tool_call_id"] in open_calls, f"a result without its call: {message}"
            open_calls.remove(message["tool_call_id"])
            continue
        assert not open_calls, f"{message} came before the results of {open_calls}"
        if role == "user":
            questions.append(message["content"].removeprefix("question "))
        elif message.get("tool_calls"):
            ids = [call["id"] for call in message["tool_calls"]]
            assert not set(ids) & seen_calls, message
            assert len(set(ids)) == len(ids), message
            seen_calls.update(ids)
            open_calls = ids
        else:
            rid = texts.get(message["content"])
            assert rid is not None, f"an answer that is not stored: {message}"
            question = answers.question_of[rid]
            assert questions, f"the answer to {question} came first"
            assert questions[-1] == question, f"the answer to {question} came after {questions}"
    assert not open_calls, f"calls without results: {open_calls}"
    assert questions == answers.order[: len(questions)], (
        f"questions sent as {questions}, answered as {answers.order}"
    )


def check_frames(conn: Connection) -> None:
    deltas: dict[str, list[str]] = {}
    for frame in conn.frames:
        if frame["type"] == "response.delta":
            deltas.setdefault(frame["response_id"], []).append(frame["text"])
        elif frame["type"] == "response.done":
            rid = frame["response_id"]
            assert frame["text"] == conn.started[rid] + "".join(deltas.get(rid, [])), frame


# -- the test ---------------------------------------------------------------------------------


@dataclass
class Servers:
    """One database, one fake model, and a server on it for each approval timeout."""

    fake: FakeGroq
    short_expiry: RunningServer
    long_expiry: RunningServer


@pytest.fixture
def own_fake() -> Iterator[FakeGroq]:
    """A fake whose script each example empties (examples script more than they are asked)."""
    with FakeGroq() as fake:
        fake.answer_model(BACKGROUND_SUMMARY_MODEL, text_reply(BACKGROUND_SUMMARY))
        yield fake


@pytest.fixture(params=["sqlite", "postgresql"])
def servers(
    request: pytest.FixtureRequest, start_server: StartServer, own_fake: FakeGroq
) -> Iterator[Servers]:
    def start(**store: Any) -> Servers:
        def server(approval_s: float) -> RunningServer:
            return start_server(
                groq_base_url=own_fake.base_url,
                tool_approval_timeout_s=approval_s,
                max_queued_messages=MAX_QUEUED,
                **store,
            )

        return Servers(own_fake, server(SHORT_APPROVAL_S), server(LONG_APPROVAL_S))

    if request.param == "sqlite":
        yield start()
        return
    for dsn in throwaway_database("statemachine"):
        yield start(database_url=dsn, database_pool_max=4)


@dataclass(frozen=True)
class Step:
    """Everything one step may use, drawn whatever the step turns out to be, so the draws
    never depend on what the server did (hypothesis replays them exactly)."""

    action: str
    while_busy: str
    replies: list[str]
    pick: int
    approved: bool
    reason: str | None
    after_last: bool
    release: bool


REPLY_PLANS = st.lists(st.sampled_from(REPLY_KINDS[2:]), max_size=2).flatmap(
    lambda tools: st.sampled_from(REPLY_KINDS[:2]).map(lambda last: [*tools, last])
)
STEPS = st.builds(
    Step,
    action=st.sampled_from(ACTIONS),
    while_busy=st.sampled_from(["reject", "enqueue", "enqueue", "interrupt"]),
    replies=REPLY_PLANS,
    pick=st.integers(min_value=0, max_value=7),
    approved=st.booleans(),
    reason=st.sampled_from([None, "not now"]),
    after_last=st.booleans(),
    release=st.booleans(),
)


async def run_step(driver: Driver, step: Step) -> None:
    await driver.drain()
    action = step.action
    if action == "reconnect" and not driver.session_id:
        action = "send"
    if action == "send":
        note(f"send while_busy={step.while_busy} replies={step.replies}")
        await driver.send(step.while_busy, step.replies)
    elif action in ("answer", "answer_other"):
        ids = sorted(driver.pending) if action == "answer" else sorted(driver.answered)
        call_id = ids[step.pick % len(ids)] if ids else "call-unknown"
        reason = None if step.approved else step.reason
        note(f"approval {call_id} approved={step.approved} reason={reason}")
        await driver.answer(call_id, approved=step.approved, reason=reason)
    elif action == "cancel":
        note("cancel")
        await driver.cancel()
    elif action == "release":
        note("release the held replies")
        driver.release()
    elif action == "wait":
        note("wait for the response to end")
        await driver.wait()
    else:
        note(f"disconnect, release={step.release}, resume after_last={step.after_last}")
        await driver.reconnect(after_last=step.after_last, release=step.release)


@EXAMPLES
@given(short_expiry=st.booleans(), steps=st.lists(STEPS, min_size=1, max_size=MAX_STEPS))
async def test_histories_stay_valid_under_random_frames(
    servers: Servers, short_expiry: bool, steps: list[Step]
) -> None:
    servers.fake.drop_script()
    server = servers.short_expiry if short_expiry else servers.long_expiry
    driver = Driver(server, servers.fake, short_expiry=short_expiry)
    try:
        await driver.connect()
        for step in steps:
            await run_step(driver, step)
        if driver.session_id:
            await driver.settle()
            await driver.check()
    finally:
        driver.release()
        await driver.close()
