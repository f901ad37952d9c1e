"""Fuzzing of the REST API: schemathesis cases, generated from the OpenAPI that a real server
publishes, sent to that server while it holds stored sessions. See docs/fuzzing.md.

Each operation gets two tests, so that a finding names its endpoint and one finding does not
hide another: no input gets a 5xx or a status code the schema does not declare; every answer
(content type and body) matches the schema the server declares for it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import StartServer
from tests.fakes.groq_server import FakeGroq, text_reply
from tests.support.server import RunningServer

READABLE_SESSIONS = 2
# Requests per operation and test. The events list has the most inputs to vary (two integers, on
# stored sessions); the operations without parameters run out of new inputs after one or two.
REQUESTS_PER_OPERATION = {
    "GET /api/sessions": 60,
    "GET /api/sessions/{session_id}": 30,
    "GET /api/sessions/{session_id}/events": 100,
    "DELETE /api/sessions/{session_id}": 30,
    "GET /api/usage": 10,
    # The AI SDK's endpoints (docs/ai-sdk.md); a valid turn is answered by the fake Groq.
    "POST /api/chat": 40,
    "GET /api/chat/{chat_id}/messages": 20,
    "GET /api/chat/{chat_id}/stream": 20,
    "POST /api/chat/{chat_id}/stop": 20,
    "GET /healthz": 10,
    "GET /readyz": 10,
    "GET /metrics": 10,
}
OPERATIONS = list(REQUESTS_PER_OPERATION)

# Deterministic (`derandomize`) so that CI runs the same cases every time; no example database,
# so nothing is written into the tree. One server serves every case of a test, on purpose.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Operation = APIOperation[Any, Any, Any, Any]
FuzzCase = Case[Any]
# Both sides of the largest 64-bit signed integer (SQLite INTEGER, PostgreSQL BIGINT).
INT64_EDGES = [2**63 - 1, 2**63, 2**64]
NEVER_FAILS: list[CheckFunction] = [not_a_server_error, status_code_conformance]
MATCHES_SCHEMA: list[CheckFunction] = [content_type_conformance, response_schema_conformance]


async def _store_session(server: RunningServer) -> str:
    """A new session with one stored exchange; its id."""
    async with server.connect() as client:
        ready = await client.ready()
        await client.ask("A message to store.")
    return str(ready["session_id"])


def _operations(schema: BaseSchema) -> dict[str, Operation]:
    operations: dict[str, Operation] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the served OpenAPI has a broken operation: {result}"
        operations[result.ok().label] = result.ok()
    return operations


class FuzzedApi:
    """The served schema's operations, case strategies, and stored sessions made on demand."""

    def __init__(self, server: RunningServer, schema: BaseSchema) -> None:
        self.server = server
        self.operations = _operations(schema)
        self.requests: Counter[str] = Counter()
        self.http = requests.Session()  # keep-alive: one connection for the cases of a test
        self._readable: list[str] = []
        self._strategies: dict[str, st.SearchStrategy[FuzzCase]] = {}

    def cases(
        self,
        operation: Operation,
        mode: GenerationMode,
        *,
        session_id: str | None,
        query: dict[str, int],
    ) -> st.SearchStrategy[FuzzCase]:
        """Cases of `operation`; with `session_id`, its path names that session; `query` pins
        some query parameters (the others are generated)."""
        key = f"{operation.label} {mode} {session_id} {sorted(query.items())}"
        if key not in self._strategies:
            path = None if session_id is None else {"session_id": session_id}
            self._strategies[key] = operation.as_strategy(
                mode, path_parameters=path, query=query or None
            )
        return self._strategies[key]

    def readable_sessions(self) -> list[str]:
        """Stored sessions that cases read (made once, at first use)."""
        while len(self._readable) < READABLE_SESSIONS:
            self._readable.append(self.new_session())
        return self._readable

    def new_session(self) -> str:
        return asyncio.run(_store_session(self.server))


@pytest.fixture
def api(start_server: StartServer, fake_groq: FakeGroq) -> Iterator[FuzzedApi]:
    """A real server, and the OpenAPI it publishes at /openapi.json."""
    fake_groq.answer_model("test-model", text_reply("A stored answer."))
    server = start_server()
    # FastAPI builds the schema at the first /openapi.json request, on the event loop: about
    # 80 ms of CPU, close to the loop guard's bound, once per server. Built here, off the loop.
    server.app.openapi()
    fuzzed = FuzzedApi(server, schemathesis.openapi.from_url(f"{server.http_url}/openapi.json"))
    yield fuzzed
    fuzzed.http.close()
    # Printed (with `-s`) so that docs/fuzzing.md can say how many cases ran.
    print(f"\nREST fuzz requests: {fuzzed.requests.total()}: {dict(fuzzed.requests)}")


def _session_for_case(api: FuzzedApi, operation: Operation, data: st.DataObject) -> str | None:
    """A stored session for half the cases of an operation on one session, else None.

    A generated id is almost never a stored one; naming stored sessions fuzzes the answers with
    data (and the query parameters on them) too. DELETE gets a fresh session each time.
    """
    if "{session_id}" not in operation.path or not data.draw(st.booleans(), label="stored"):
        return None
    if operation.method.upper() == "DELETE":
        return api.new_session()
    return data.draw(st.sampled_from(api.readable_sessions()), label="session")


def _unbounded_integers(operation: Operation) -> list[str]:
    """Query parameters declared as integers without a maximum."""
    return [
        parameter.name
        for parameter in operation.query
        if parameter.definition.get("schema", {}).get("type") == "integer"
        and "maximum" not in parameter.definition.get("schema", {})
    ]


def _edge_integers(operation: Operation, data: st.DataObject) -> dict[str, int]:
    """Sometimes pin an unbounded integer parameter at the edge of the stores' 64-bit integers,
    a value that random generation reaches only by luck."""
    pinned: dict[str, int] = {}
    for name in _unbounded_integers(operation):
        if data.draw(st.integers(0, 3), label=f"pin {name}") == 0:
            pinned[name] = data.draw(st.sampled_from(INT64_EDGES), label=name)
    return pinned


def fuzz_operation(
    api: FuzzedApi, label: str, data: st.DataObject, checks: list[CheckFunction]
) -> None:
    """One case of `label`, valid or invalid input, sent to the server and checked."""
    operation = api.operations[label]
    mode = data.draw(st.sampled_from(list(GenerationMode)), label="mode")
    session_id = _session_for_case(api, operation, data)
    query = _edge_integers(operation, data)
    case = data.draw(api.cases(operation, mode, session_id=session_id, query=query), label="case")
    response = case.call_and_validate(session=api.http, checks=checks)
    kind = f"{mode.value}{' stored session' if session_id else ''}"
    api.requests[kind] += 1
    event(f"{kind} -> {response.status_code}")


def test_every_operation_is_fuzzed(api: FuzzedApi) -> None:
    """A new endpoint must join REQUESTS_PER_OPERATION, or it would go unfuzzed."""
    assert sorted(api.operations) == sorted(OPERATIONS)


def run_fuzzer(api: FuzzedApi, label: str, checks: list[CheckFunction]) -> None:
    """Hypothesis drives the cases of one operation, with that operation's budget."""

    @settings(FUZZ, max_examples=REQUESTS_PER_OPERATION[label])
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        fuzz_operation(api, label, data, checks)

    fuzz()


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_input_gets_a_server_error(api: FuzzedApi, label: str) -> None:
    run_fuzzer(api, label, NEVER_FAILS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_every_answer_matches_the_declared_schema(api: FuzzedApi, label: str) -> None:
    run_fuzzer(api, label, MATCHES_SCHEMA)
