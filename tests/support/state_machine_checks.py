"""What the conversation state-machine test checks of a session's stored history and of every
model request: each message answered once and in order, every tool call closed once, every
request one the Groq API accepts (tests/routers/test_conversation_state_machine.py)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from app.services.approvals import DENIED, TIMED_OUT
from tests.support.client import Frame


def short(event: Frame) -> str:
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
