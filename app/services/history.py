"""Turns a session's stored events into the chat messages a model is sent, always valid.

The log is in the order things happened; the model reads them in conversation order
(`model_order`): a message queued while a response ran comes after that response's answer, and
a tool's result right after its call, even when the result was stored later (a call that
waited for approval across a restart is run by a later response).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import assert_never

from pydantic_core import to_json

from app.protocol import (
    FINISH_AWAITING_APPROVAL,
    AssistantMessageEvent,
    StoredEvent,
    ToolApprovalEvent,
    ToolApprovalRequestedEvent,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)
from app.services.llm.base import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    SystemPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPart,
)

INTERRUPTED_TOOL_RESULT = '{"error": "the tool did not finish (interrupted)"}'


def tool_result_content(event: ToolResultEvent) -> str:
    """What the model reads as a tool's answer."""
    if event.ok:
        return to_json(event.result).decode()
    return to_json({"error": event.error}).decode()


def _call_part(event: ToolCallEvent) -> ToolCallPart:
    arguments = event.raw_arguments
    if arguments is None:
        arguments = to_json(event.arguments).decode()
    return ToolCallPart(call_id=event.call_id, name=event.name, arguments=arguments)


class _MessageBuilder:
    """Accumulates messages; repairs a tool call left without a result (crash, kill, cancel)."""

    def __init__(self, system_prompt: str) -> None:
        self.messages: list[ChatMessage] = [ModelRequest([SystemPart(system_prompt)])]
        self._open_calls: dict[str, str] = {}  # call id -> tool name
        self._call_message: ModelResponse | None = None

    def add(self, event: StoredEvent) -> None:
        if isinstance(event, ToolCallEvent):
            self._add_call(event)
        elif isinstance(event, ToolResultEvent):
            self._add_result(event)
        elif isinstance(event, UserMessageEvent):
            self._close_calls()
            self.messages.append(ModelRequest([UserPart(event.text)]))
        elif isinstance(event, AssistantMessageEvent):
            self._close_calls()
            if event.text:
                self.messages.append(ModelResponse([TextPart(event.text)]))
        elif isinstance(event, ToolApprovalRequestedEvent | ToolApprovalEvent):
            pass  # the person's part: the model reads its outcome in the tool's result
        else:
            assert_never(event)

    def _add_call(self, event: ToolCallEvent) -> None:
        if self._call_message is None:
            self._close_calls()
            self._call_message = ModelResponse([])
            self.messages.append(self._call_message)
        self._call_message.parts.append(_call_part(event))
        self._open_calls[event.call_id] = event.name

    def _add_result(self, event: ToolResultEvent) -> None:
        if event.call_id not in self._open_calls:
            return  # a result without its call would make the request invalid
        del self._open_calls[event.call_id]
        self._call_message = None
        content = tool_result_content(event)
        self.messages.append(ModelRequest([ToolReturnPart(event.call_id, event.name, content)]))

    def _close_calls(self) -> None:
        for call_id, name in self._open_calls.items():
            interrupted = ToolReturnPart(call_id, name, INTERRUPTED_TOOL_RESULT)
            self.messages.append(ModelRequest([interrupted]))
        self._open_calls.clear()
        self._call_message = None

    def finish(self) -> list[ChatMessage]:
        self._close_calls()
        return self.messages


def superseded_responses(events: Sequence[StoredEvent]) -> set[str]:
    """The ids of responses a later one replaced (regenerated answers)."""
    return {
        event.supersedes
        for event in events
        if isinstance(event, AssistantMessageEvent) and event.supersedes is not None
    }


def current_events(
    events: Sequence[StoredEvent], *, also_superseded: str | None = None
) -> Sequence[StoredEvent]:
    """The events without those of replaced responses (`also_superseded`: one being replaced
    right now, whose replacement is not stored yet): what the model and the summaries see."""
    superseded = superseded_responses(events)
    if also_superseded is not None:
        superseded.add(also_superseded)
    if not superseded:
        return events
    return [
        event
        for event in events
        if isinstance(event, UserMessageEvent) or event.response_id not in superseded
    ]


def build_messages(system_prompt: str, events: Sequence[StoredEvent]) -> list[ChatMessage]:
    """System prompt, then the conversation, with every tool call closed by a result."""
    builder = _MessageBuilder(system_prompt)
    for event in model_order(events):
        builder.add(event)
    return builder.finish()


class _ModelOrder:
    """`model_order`'s pass over the log: the calls of a round wait in `calls` and are put out
    with their results; queued messages wait in `waiting` for the answer before them."""

    def __init__(self, events: Sequence[StoredEvent]) -> None:
        self.out: list[StoredEvent] = []
        self.results: dict[str, ToolResultEvent] = {}
        for event in events:
            if isinstance(event, ToolResultEvent):
                self.results.setdefault(event.call_id, event)
        self.calls: list[ToolCallEvent] = []
        self.waiting: deque[UserMessageEvent] = deque()
        # The last user message put out has no answer yet.
        self.answering = False
        self.last_question: UserMessageEvent | None = None

    def put_calls(self) -> None:
        self.out.extend(self.calls)
        self.out.extend(r for c in self.calls if (r := self.results.get(c.call_id)) is not None)
        self.calls.clear()

    def put(self, event: StoredEvent) -> None:
        self.put_calls()
        self.out.append(event)
        if isinstance(event, UserMessageEvent):
            self.answering = True
            self.last_question = event

    def answered(self, answer: AssistantMessageEvent, following: StoredEvent | None) -> None:
        self.put(answer)
        if answer.finish_reason == FINISH_AWAITING_APPROVAL:
            return  # paused at a shutdown: the response that goes on answers the same message
        self.answering = False
        # Next comes the oldest queued message, unless one sent to interrupt was answered first.
        interrupting = isinstance(following, UserMessageEvent) and not following.queued
        if self.waiting and not interrupting:
            self.put(self.waiting.popleft())


def model_order(events: Sequence[StoredEvent]) -> list[StoredEvent]:
    """The events in the order the model reads them. A queued message follows the answer of
    the response that ran when it was sent (and of those queued before it); a tool result
    follows its round's calls; approval events are left out (the result says the outcome).
    Results without a call are dropped, and queued messages still waiting are left out: they
    are not the question of any response yet."""
    return _ordered(events).out


def waiting_messages(events: Sequence[StoredEvent]) -> list[UserMessageEvent]:
    """Queued messages whose turn has not come, in the order they are to be answered."""
    return list(_ordered(events).waiting)


def queued_backlog(events: Sequence[StoredEvent]) -> list[UserMessageEvent]:
    """The queued messages a stopped process left unanswered, in the order to answer them:
    one whose turn had come but whose response never began, then those still waiting."""
    order = _ordered(events)
    backlog = list(order.waiting)
    question = order.last_question
    if question is not None and question.queued and order.out[-1] is question:
        backlog.insert(0, question)
    return backlog


def _ordered(events: Sequence[StoredEvent]) -> _ModelOrder:
    order = _ModelOrder(events)
    for index, event in enumerate(events):
        if isinstance(event, ToolCallEvent):
            if order.calls and order.calls[0].response_id != event.response_id:
                order.put_calls()
            order.calls.append(event)
        elif isinstance(event, ToolResultEvent | ToolApprovalRequestedEvent | ToolApprovalEvent):
            continue  # results go with their calls; approvals are not the model's
        elif isinstance(event, UserMessageEvent):
            if event.queued and (order.answering or order.waiting):
                order.waiting.append(event)
            else:
                order.put(event)
        elif isinstance(event, AssistantMessageEvent):
            following = events[index + 1] if index + 1 < len(events) else None
            order.answered(event, following)
        else:
            assert_never(event)
    order.put_calls()
    return order
