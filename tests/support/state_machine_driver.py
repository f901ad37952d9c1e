"""The client side of the conversation state-machine test: a connection's frames and what the
client knows of the session (pending calls, queued messages, held replies), one method per
kind of step (tests/routers/test_conversation_state_machine.py)."""

from __future__ import annotations

import asyncio
import itertools
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import hypothesis
from hypothesis import note

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
from tests.support.state_machine_checks import (
    answered_questions,
    check_request,
    check_stored_history,
    short,
)

MAX_QUEUED = 2
SHORT_APPROVAL_S = 0.6
LONG_APPROVAL_S = 600.0
# An approval this close to its expiry may expire before the server reads the answer.
EXPIRY_MARGIN_S = 0.3
WAIT_S = 5.0


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
        note("stored:\n" + "\n".join(short(e) for e in events))
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


def check_frames(conn: Connection) -> None:
    deltas: dict[str, list[str]] = {}
    for frame in conn.frames:
        if frame["type"] == "response.delta":
            deltas.setdefault(frame["response_id"], []).append(frame["text"])
        elif frame["type"] == "response.done":
            rid = frame["response_id"]
            assert frame["text"] == conn.started[rid] + "".join(deltas.get(rid, [])), frame
