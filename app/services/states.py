"""Checked state machines: an `Enum` state and a table of the changes it allows (STYLE.md), so
"cancel while idle" or "send after close" is a defined case, not an exception in a log."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

StateT = TypeVar("StateT", bound=Enum)


class InvalidTransition(RuntimeError):
    """A state change its machine does not allow: a bug in the caller, never a client's doing."""


def check_transition(
    table: Mapping[StateT, frozenset[StateT]], current: StateT, new: StateT
) -> StateT:
    """`new`, if `table` allows going there from `current`; else `InvalidTransition`."""
    if new not in table[current]:
        raise InvalidTransition(f"{current.name} -> {new.name} is not a transition")
    return new
