"""The checked state machines: a change the table does not allow is refused, and the tables of
the conversation, the response and the remote join say what may follow what."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import pytest

from app.services.conversation_parts import CONVERSATION_TRANSITIONS, ConversationState
from app.services.joining import _JOIN_TRANSITIONS, JoinState
from app.services.response_parts import RESPONSE_TRANSITIONS, ResponseState
from app.services.states import InvalidTransition, check_transition

Table = Mapping[Any, frozenset[Any]]


def test_a_change_the_table_allows_is_taken() -> None:
    new = check_transition(
        RESPONSE_TRANSITIONS, ResponseState.STREAMING, ResponseState.RUNNING_TOOLS
    )
    assert new is ResponseState.RUNNING_TOOLS


@pytest.mark.parametrize(
    ("table", "current", "new"),
    [
        (RESPONSE_TRANSITIONS, ResponseState.DONE, ResponseState.STREAMING),
        (RESPONSE_TRANSITIONS, ResponseState.CANCELLING, ResponseState.RUNNING_TOOLS),
        (RESPONSE_TRANSITIONS, ResponseState.STARTING, ResponseState.DONE),
        (CONVERSATION_TRANSITIONS, ConversationState.CLOSED, ConversationState.OPEN),
        (_JOIN_TRANSITIONS, JoinState.CONVERSATION, JoinState.FOLLOWING),
    ],
)
def test_a_change_the_table_does_not_allow_is_refused(
    table: Table, current: Enum, new: Enum
) -> None:
    with pytest.raises(InvalidTransition, match=f"{current.name} -> {new.name}"):
        check_transition(table, current, new)


@pytest.mark.parametrize(
    ("table", "start", "ends"),
    [
        (RESPONSE_TRANSITIONS, ResponseState.STARTING, {ResponseState.DONE}),
        (CONVERSATION_TRANSITIONS, ConversationState.OPEN, {ConversationState.CLOSED}),
        (_JOIN_TRANSITIONS, JoinState.FOLLOWING, {JoinState.CONVERSATION, JoinState.ENDED}),
    ],
)
def test_every_state_is_reachable_and_only_the_ends_are_final(
    table: Table, start: Enum, ends: set[Enum]
) -> None:
    reached, frontier = {start}, [start]
    while frontier:
        for following in table[frontier.pop()]:
            if following not in reached:
                reached.add(following)
                frontier.append(following)
    assert reached == set(table)
    assert {state for state, nexts in table.items() if not nexts} == ends
