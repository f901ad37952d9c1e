"""Arbitrary Unicode and JSON through SQLite, PostgreSQL and Supabase: stored is read back exactly.

Client input is stored as given when it is storable (`not unstorable(x)`; the rest is refused at
the edge). Model and tool output is made storable first (`storable_text`, `storable_json`, as the
response runner does) and must then come back equal from every field of every event type. And
what `unstorable` flags, PostgreSQL really refuses: the edge check is not stricter than needed.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from app.database.base import Store, StoreError
from app.database.postgres import PostgresStore
from app.protocol import (
    AssistantMessageEvent,
    ResponseStatus,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    UserMessageEvent,
)
from app.services.history import tool_result_content
from app.services.storable import storable_json, storable_text, unstorable
from tests.database.builders import T0, leased_session, rows_of
from tests.database.conftest import clear_tables

# One session per example, so examples never meet; the store (a fixture) is shared by them.
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Characters worth meeting more often than a uniform draw would: NUL, both ends of the surrogate
# range, the replacement character, JSON's escapes, line separators, astral and joining ones.
_TRICKY = '\x00\ud800\udbff\udc00\udfff\ufffd"\\/\b\f\n\r\t\x7f\u2028\u2029\ufeff\U0001f389\u200d'
ANY_CHARACTER = st.characters(exclude_categories=()) | st.sampled_from(_TRICKY)
STORABLE_CHARACTER = ANY_CHARACTER.filter(lambda c: not unstorable(c))
any_text = st.text(ANY_CHARACTER, max_size=40)
storable_input = st.text(STORABLE_CHARACTER, max_size=40)
unstorable_text = st.builds(
    lambda before, bad, after: before + bad + after,
    any_text,
    st.sampled_from("\x00\ud800\udfff") | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    any_text,
)

# Numbers of every size: integers, floats (from 2^53 up stored as the integers they are), NaN and
# the infinities (which become null).
json_numbers = (
    st.integers()
    | st.integers(min_value=2**60, max_value=2**2000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([math.inf, -math.inf, math.nan, -0.0, 5e-324, 2.0**60, 1e300])
)
json_scalars = st.none() | st.booleans() | json_numbers | any_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(any_text, json_values, max_size=5)


def storable_object(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    stored = storable_json(value)
    assert isinstance(stored, dict)  # an object stays an object
    return stored


def at(seq: int) -> dict[str, object]:
    return {"seq": seq, "created_at": T0 + timedelta(seconds=seq), "response_id": "resp-1"}


@st.composite
def conversations(draw: st.DrawFn) -> list[StoredEvent]:
    """One exchange of every event type, each text and JSON field drawn at random and then made
    storable the way the app makes it (client input is refused at the edge when unstorable)."""

    def text() -> str:
        return storable_text(draw(any_text))

    call_id, name = text(), text()
    return [
        UserMessageEvent(seq=1, created_at=T0, id=draw(storable_input), text=draw(storable_input)),
        ToolCallEvent(
            **at(2),
            call_id=call_id,
            name=name,
            arguments=storable_object(draw(json_objects)),
            raw_arguments=draw(st.none() | any_text.map(storable_text)),
        ),
        ToolResultEvent(
            **at(3), call_id=call_id, name=name, ok=True, result=storable_json(draw(json_values))
        ),
        ToolResultEvent(**at(4), call_id=call_id, name=name, ok=False, error=text()),
        AssistantMessageEvent(
            **at(5),
            status=draw(st.sampled_from(ResponseStatus)),
            text=text(),
            finish_reason=text(),
            usage=draw(st.none() | json_objects.map(storable_object)),
            model=text(),
        ),
    ]


@EXAMPLES
@given(events=conversations())
async def test_storable_values_read_back_exactly_from_every_field(
    store: Store, events: list[StoredEvent]
) -> None:
    record, lease = await leased_session(store)
    await store.events.append(rows_of(lease, *events))
    assert await store.events.read(record.id) == events


# ---------------------------------------------------------------- what the edge refuses


@pytest.fixture
async def pg_store(pg_database: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_database, pool_min=1, pool_max=2)
    await store.open()
    await clear_tables(pg_database)
    yield store
    await store.close()


@settings(EXAMPLES, max_examples=40)
@given(bad=unstorable_text, good=storable_input, bad_is_id=st.booleans())
async def test_what_unstorable_flags_postgresql_refuses(
    pg_store: PostgresStore, bad: str, good: str, bad_is_id: bool
) -> None:
    assert unstorable(bad)
    message_id, text = (bad, good) if bad_is_id else (good, bad)
    record, lease = await leased_session(pg_store)
    message = UserMessageEvent(seq=1, created_at=T0, id=message_id, text=text)
    with pytest.raises(StoreError) as caught:
        await pg_store.events.append(rows_of(lease, message))
    assert caught.value.retryable is False
    assert await pg_store.events.read(record.id) == []


@pytest.mark.parametrize("field", ["text", "id"])
async def test_every_store_refuses_a_lone_surrogate_as_a_store_error(
    store: Store, field: str
) -> None:
    record, lease = await leased_session(store)
    fields = {"text": "fine", "id": "m-1"} | {field: "a\udfffb"}
    message = UserMessageEvent(seq=1, created_at=T0, **fields)
    with pytest.raises(StoreError) as caught:
        await store.events.append(rows_of(lease, message))
    assert caught.value.retryable is False
    assert await store.events.read(record.id) == []


# ---------------------------------------------------------------- large numbers


# PostgreSQL's jsonb keeps a number as an exact decimal and prints it without an exponent, so a
# double of 2^53 or more (always an integer) would come back as an integer; `storable_json` stores
# it as that integer in the first place, and integers of any size round-trip and encode again.
@pytest.mark.parametrize("number", [2**63, 2**64, 2.0**60, 1e20, -1e300, 2**1100], ids=repr)
async def test_large_numbers_read_back_exactly_and_encode_again(
    store: Store, number: float
) -> None:
    record, lease = await leased_session(store)
    result = ToolResultEvent(**at(1), call_id="c", name="n", ok=True, result=storable_json(number))
    await store.events.append(rows_of(lease, result))
    [read] = await store.events.read(record.id)
    assert read == result
    assert isinstance(read, ToolResultEvent)
    assert tool_result_content(read) == str(int(number))  # what the next turn sends the model
