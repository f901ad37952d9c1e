"""The log in conversation order for the model (`history.model_order`), and what a stopped
process left waiting in it: queued messages (`queued_backlog`) and rounds waiting for approval
(`approvals.paused_round`, `open_approvals`). Pure functions of the stored events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.protocol import (
    FINISH_AWAITING_APPROVAL,
    AssistantMessageEvent,
    ResponseStatus,
    StoredEvent,
    ToolApprovalEvent,
    ToolApprovalRequestedEvent,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)
from app.services.approvals import open_approvals, paused_round
from app.services.context import split_turns
from app.services.history import build_messages, model_order, queued_backlog
from app.services.llm.chat_wire import wire_messages

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Log:
    """Builds a session's events with gapless seqs."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []

    def _seq(self) -> int:
        return len(self.events) + 1

    def user(self, text: str, *, queued: bool = False) -> Log:
        self.events.append(
            UserMessageEvent(seq=self._seq(), created_at=NOW, id=text, text=text, queued=queued)
        )
        return self

    def call(self, response: str, call_id: str) -> Log:
        self.events.append(
            ToolCallEvent(
                seq=self._seq(),
                created_at=NOW,
                response_id=response,
                call_id=call_id,
                name="update_user_plan",
                arguments={"user_id": "123"},
            )
        )
        return self

    def result(self, response: str, call_id: str) -> Log:
        self.events.append(
            ToolResultEvent(
                seq=self._seq(),
                created_at=NOW,
                response_id=response,
                call_id=call_id,
                name="update_user_plan",
                ok=True,
                result={"done": call_id},
            )
        )
        return self

    def request(self, response: str, call_id: str, *, expires_in_s: float = 600) -> Log:
        self.events.append(
            ToolApprovalRequestedEvent(
                seq=self._seq(),
                created_at=NOW,
                response_id=response,
                call_id=call_id,
                name="update_user_plan",
                arguments={"user_id": "123"},
                expires_at=datetime.now(UTC) + timedelta(seconds=expires_in_s),
            )
        )
        return self

    def approval(self, response: str, call_id: str, *, approved: bool = True) -> Log:
        self.events.append(
            ToolApprovalEvent(
                seq=self._seq(),
                created_at=NOW,
                response_id=response,
                call_id=call_id,
                approved=approved,
            )
        )
        return self

    def answer(self, response: str, text: str, *, finish: str = "stop") -> Log:
        status = ResponseStatus.CANCELLED if finish == "cancelled" else ResponseStatus.COMPLETED
        self.events.append(
            AssistantMessageEvent(
                seq=self._seq(),
                created_at=NOW,
                response_id=response,
                status=status,
                text=text,
                finish_reason=finish,
                usage=None,
                model="m",
            )
        )
        return self


def _texts(events: list[StoredEvent]) -> list[str]:
    out = []
    for event in events:
        if isinstance(event, UserMessageEvent | AssistantMessageEvent):
            out.append(event.text)
        elif isinstance(event, ToolCallEvent | ToolResultEvent):
            out.append(f"{event.type}:{event.call_id}")
    return out


def test_a_queued_message_comes_after_the_answer_it_waited_for() -> None:
    log = (
        Log()
        .user("one")
        .call("r1", "c1")
        .user("two", queued=True)
        .user("three", queued=True)
        .result("r1", "c1")
        .answer("r1", "answer one")
        .answer("r2", "answer two")
    )
    assert _texts(model_order(log.events)) == [
        "one",
        "tool.call:c1",
        "tool.result:c1",
        "answer one",
        "two",
        "answer two",
        "three",
    ]
    # "three" has its turn now: its response has not begun.
    assert [m.text for m in queued_backlog(log.events)] == ["three"]


def test_messages_still_waiting_are_not_shown_to_the_model() -> None:
    log = Log().user("one").user("two", queued=True).user("three", queued=True)
    assert _texts(model_order(log.events)) == ["one"]
    assert [m.text for m in queued_backlog(log.events)] == ["two", "three"]


def test_an_interrupting_message_is_answered_before_those_queued_earlier() -> None:
    log = (
        Log()
        .user("one")
        .user("two", queued=True)
        .answer("r1", "partial", finish="cancelled")
        .user("now")
        .answer("r2", "answer now")
    )
    assert _texts(model_order(log.events)) == ["one", "partial", "now", "answer now", "two"]
    assert [m.text for m in queued_backlog(log.events)] == ["two"]


def test_a_result_stored_after_a_restart_follows_its_call() -> None:
    # The response paused at a shutdown; the next process's response ran the call.
    log = (
        Log()
        .user("upgrade")
        .call("r1", "c1")
        .request("r1", "c1")
        .answer("r1", "", finish=FINISH_AWAITING_APPROVAL)
        .approval("r1", "c1")
        .result("r2", "c1")
        .answer("r2", "upgraded")
    )
    messages = wire_messages(build_messages("system", log.events))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[3]["content"] == '{"done":"c1"}'
    assert paused_round(log.events) is None


def test_a_paused_round_is_rebuilt_from_the_log_with_its_answers() -> None:
    log = (
        Log()
        .user("upgrade both")
        .call("r1", "c1")
        .call("r1", "c2")
        .call("r1", "plain")
        .request("r1", "c1")
        .request("r1", "c2")
        .approval("r1", "c1", approved=False)
        .answer("r1", "", finish=FINISH_AWAITING_APPROVAL)
    )
    paused = paused_round(log.events)
    assert paused is not None
    assert [c.call_id for c in paused.calls] == ["c1", "c2", "plain"]
    assert [r.call_id for r in paused.unanswered] == ["c2"]
    assert paused.answers["c1"].approved is False
    assert open_approvals(log.events) == ["c2"]
    # The queued messages of a paused round are not its question: none is left to answer.
    assert queued_backlog(log.events) == []


def test_an_expired_request_is_not_open() -> None:
    log = Log().user("upgrade").call("r1", "c1").request("r1", "c1", expires_in_s=-1)
    assert open_approvals(log.events) == []
    paused = paused_round(log.events)
    assert paused is not None
    assert [r.call_id for r in paused.unanswered] == ["c1"]


def test_a_fold_never_separates_a_queued_message_from_its_turn() -> None:
    log = (
        Log()
        .user("one")
        .call("r1", "c1")
        .user("two", queued=True)
        .result("r1", "c1")
        .answer("r1", "answer one")
        .answer("r2", "answer two")
        .user("three")
    )
    assert [[e.seq for e in turn] for turn in split_turns(log.events)] == [[1, 2, 3, 4, 5, 6], [7]]
