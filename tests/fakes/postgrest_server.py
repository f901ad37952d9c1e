"""A fake Supabase REST API (PostgREST) on a real loopback socket, over a real PostgreSQL database.

No PostgREST binary exists on these machines. This fake speaks the part of PostgREST's wire format
our store uses (filters, `or=`, `order`, `limit`/`offset`, bulk inserts with `on_conflict` and
`Prefer: resolution=...`, `return=minimal|representation`, error bodies with SQLSTATE codes) and
runs each request as one SQL statement on a real database holding `schema.sql`, so the schema's
trigger, keys and checks answer exactly as they would behind Supabase. Every request is checked
against `EXPECTATIONS` (headers, `Prefer`, query, body), the one place that says what our store
may send; a request that breaks them is answered 400 and recorded, and `assert_clean()` fails.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SERVICE_KEY = "test-service-role-key"
TABLES = (
    "sessions",
    "session_events",
    "user_profiles",
    "schema_version",
    "session_leases",
    "owner_usage",
)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_RESERVED_PARAMS = {"select", "order", "limit", "offset", "on_conflict", "columns", "or"}


@dataclass(frozen=True)
class Expectation:
    """What one kind of request (method, table) must carry."""

    prefer: frozenset[str] = frozenset()
    params: dict[str, str] = field(default_factory=dict)
    max_rows: int | None = None  # rows in an insert body
    filtered: bool = False  # an update or delete without a filter would touch every row
    max_limit: int | None = None  # reads are paged


_READ = Expectation(max_limit=1000)
EXPECTATIONS: dict[tuple[str, str], Expectation] = {
    **{("GET", table): _READ for table in TABLES},
    ("POST", "sessions"): Expectation(prefer=frozenset({"return=minimal"})),
    # Events go in only through the schema's fenced append function (one call = one
    # transaction), at most 500 a call.
    ("POST", "rpc/append_session_events"): Expectation(max_rows=500),
    # Usage and retention: one function call each, with one JSON object argument (`request`).
    **{
        ("POST", f"rpc/{function}"): Expectation()
        for function in (
            "take_owner_usage",
            "live_sessions_of",
            "claim_housekeeping",
            "delete_old_sessions",
        )
    },
    ("POST", "user_profiles"): Expectation(
        prefer=frozenset({"return=minimal", "resolution=merge-duplicates"}),
        params={"on_conflict": "user_id"},
    ),
    # Plain updates answer nothing; job claims ask for the rows their condition let through.
    ("PATCH", "sessions"): Expectation(filtered=True),
    ("POST", "session_leases"): Expectation(
        prefer=frozenset({"return=representation", "resolution=ignore-duplicates"}),
        params={"on_conflict": "session_id"},
        max_rows=1,
    ),
    ("PATCH", "session_leases"): Expectation(filtered=True),
    ("DELETE", "sessions"): Expectation(filtered=True),
    ("DELETE", "owner_usage"): Expectation(filtered=True),
}


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    table: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any


class Violation(Exception):
    """A request our store should never send."""


def check_request(recorded: Recorded, key: str) -> None:
    """Raise `Violation` unless the request meets `EXPECTATIONS` and carries the key headers."""
    headers = recorded.headers
    if headers.get("apikey") != key or headers.get("authorization") != f"Bearer {key}":
        raise Violation("apikey and Authorization: Bearer <key> must both carry the key")
    profile = "accept-profile" if recorded.method == "GET" else "content-profile"
    if headers.get(profile) != "public":
        raise Violation(f"{profile}: public is missing")
    expectation = EXPECTATIONS.get((recorded.method, recorded.table))
    if expectation is None:
        raise Violation(f"unexpected {recorded.method} on {recorded.table}")
    prefer = {part.strip() for part in headers.get("prefer", "").split(",") if part.strip()}
    if not expectation.prefer <= prefer:
        raise Violation(f"Prefer must hold {sorted(expectation.prefer)}, got {sorted(prefer)}")
    params = dict(recorded.params)
    for name, value in expectation.params.items():
        if params.get(name) != value:
            raise Violation(f"query {name}={value} expected, got {params.get(name)!r}")
    if expectation.max_rows is not None:
        rows = recorded.body if isinstance(recorded.body, list) else [recorded.body]
        if recorded.table.startswith("rpc/"):
            rows = recorded.body.get("events", []) if isinstance(recorded.body, dict) else []
        if len(rows) > expectation.max_rows:
            raise Violation(f"{len(rows)} rows in one insert (at most {expectation.max_rows})")
    if expectation.filtered and not _filters(recorded.params):
        raise Violation(f"{recorded.method} without a filter")
    if expectation.max_limit is not None:
        limit = int(params.get("limit", "0") or 0)
        if not 0 < limit <= expectation.max_limit:
            raise Violation(f"reads must set limit 1..{expectation.max_limit}, got {limit}")


def _filters(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in params if name not in _RESERVED_PARAMS - {"or"}]


# ---------------------------------------------------------------- PostgREST grammar -> SQL


class _Sql:
    """An SQL text being built, with its bound parameters (all sent as text, then cast)."""

    def __init__(self, table: str, types: dict[str, str]) -> None:
        self.table = table
        self.types = types
        self.params: list[object] = []

    def column(self, name: str) -> str:
        if not _IDENTIFIER.match(name) or name not in self.types:
            raise Violation(f"unknown column {name!r} of {self.table}")
        return f'{self.table}."{name}"'

    def bind(self, value: object, cast: str) -> str:
        self.params.append(value)
        return f"${len(self.params)}::{cast}"

    def condition(self, column: str, operator: str, value: str) -> str:
        target = self.column(column)
        kind = self.types[column]
        if operator == "is" and value in {"null", "true", "false"}:
            return f"{target} is {value}"
        if operator == "in":
            items = _split_list(value.removeprefix("(").removesuffix(")"))
            return f"{target} = any({self.bind(items, 'text[]')}::{kind}[])"
        if operator not in _OPERATORS:
            raise Violation(f"operator {operator!r} is not used by our store")
        return f"{target} {_OPERATORS[operator]} {self.bind(_unquote(value), 'text')}::{kind}"


def _split_list(text: str) -> list[str]:
    """Split on commas outside double quotes and parentheses."""
    parts, depth, quoted, current = [], 0, False, ""
    index = 0
    while index < len(text):
        char = text[index]
        if quoted and char == "\\":
            current += text[index : index + 2]
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(current)
            current = ""
            index += 1
            continue
        current += char
        index += 1
    parts.append(current)
    return [_unquote(part) if part.startswith('"') else part for part in parts]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _logic(sql: _Sql, text: str) -> str:
    """`a.op.v` or `and(...)` / `or(...)`, as inside `or=(...)`."""
    for joiner in ("and", "or"):
        if text.startswith(f"{joiner}(") and text.endswith(")"):
            terms = _split_list(text[len(joiner) + 1 : -1])
            return "(" + f" {joiner} ".join(_logic(sql, term) for term in terms) + ")"
    column, operator, value = text.split(".", 2)
    return sql.condition(column, operator, value)


def _where(sql: _Sql, params: list[tuple[str, str]]) -> str:
    clauses = []
    for name, value in _filters(params):
        if name == "or":
            clauses.append(_logic(sql, f"or{value}"))
        else:
            operator, _, operand = value.partition(".")
            clauses.append(sql.condition(name, operator, operand))
    return f" where {' and '.join(clauses)}" if clauses else ""


def _columns(sql: _Sql, select: str | None) -> str:
    if select in (None, "*"):
        return ", ".join(sql.column(name) for name in sql.types)
    return ", ".join(sql.column(name) for name in select.split(","))


def _order(sql: _Sql, order: str | None) -> str:
    if not order:
        return ""
    terms = []
    for term in order.split(","):
        column, _, direction = term.partition(".")
        if direction not in {"", "asc", "desc"}:
            raise Violation(f"order {term!r} is not used by our store")
        terms.append(f"{sql.column(column)} {direction or 'asc'}")
    return " order by " + ", ".join(terms)


def _as_json_array(inner: str) -> str:
    # A CTE, since an INSERT/UPDATE/DELETE ... RETURNING cannot be a subquery in FROM.
    return f"with r as ({inner}) select coalesce(json_agg(r), '[]'::json)::text from r"


def select_sql(sql: _Sql, params: list[tuple[str, str]]) -> str:
    """GET: the rows as one JSON array, like PostgREST."""
    query = dict(params)
    text = f"select {_columns(sql, query.get('select'))} from {sql.table}{_where(sql, params)}"
    text += _order(sql, query.get("order"))
    if "limit" in query:
        text += f" limit {int(query['limit'])}"
    if "offset" in query:
        text += f" offset {int(query['offset'])}"
    return _as_json_array(text)


def insert_sql(sql: _Sql, params: list[tuple[str, str]], body: Any, prefer: set[str]) -> str:
    """POST: `json_populate_recordset`, as PostgREST builds it, with its conflict handling."""
    rows = body if isinstance(body, list) else [body]
    if not rows:
        # PostgREST answers an empty array with no rows, 201 (PostgREST/postgrest#1265).
        return "select '[]'"
    query = dict(params)
    names = _split_list(query.get("columns", ",".join(rows[0])))  # names may be quoted
    columns = ", ".join(f'"{name}"' for name in names if sql.column(name))
    body_json = sql.bind(json.dumps(rows), "json")
    source = f"json_populate_recordset(null::{sql.table}, {body_json})"
    text = f"insert into {sql.table} ({columns}) select {columns} from {source}"
    if "on_conflict" in query:
        target = ", ".join(
            f'"{name}"' for name in query["on_conflict"].split(",") if sql.column(name)
        )
        if "resolution=ignore-duplicates" in prefer:
            text += f" on conflict ({target}) do nothing"
        else:
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns.split(", "))
            text += f" on conflict ({target}) do update set {updates}"
    return _as_json_array(text + " returning *")


def update_sql(sql: _Sql, params: list[tuple[str, str]], body: Any) -> str:
    """PATCH: the body's columns, on the filtered rows."""
    assignments = ", ".join(f'"{name}" = new."{name}"' for name in body if sql.column(name))
    body_json = sql.bind(json.dumps(body), "json")
    source = f"json_populate_record(null::{sql.table}, {body_json}) new"
    text = f"update {sql.table} set {assignments} from {source}{_where(sql, params)}"
    text += f" returning {sql.table}.*"
    return _as_json_array(text)


def delete_sql(sql: _Sql, params: list[tuple[str, str]]) -> str:
    """DELETE: the filtered rows; their selected columns come back with return=representation."""
    select = dict(params).get("select")
    deleted = f"delete from {sql.table}{_where(sql, params)} returning {_columns(sql, select)}"
    return _as_json_array(deleted)


_STATUS_BY_CLASS = {"08": 503, "22": 400, "23": 409, "53": 503, "57": 503}
_STATUS_BY_STATE = {"42501": 403, "42P01": 404, "23502": 400, "23514": 400, "42703": 400}


def postgres_error(error: asyncpg.PostgresError) -> Response:
    """The answer PostgREST gives for a database error: status by SQLSTATE, JSON details."""
    state = str(error.sqlstate)
    status = _STATUS_BY_STATE.get(state) or _STATUS_BY_CLASS.get(state[:2], 400)
    body = {
        "code": state,
        "message": str(error),
        "details": getattr(error, "detail", None),
        "hint": getattr(error, "hint", None),
    }
    return Response(orjson.dumps(body), status, media_type="application/json")


# ---------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class FakePostgrest:
    """The fake on a free loopback port, in its own thread and loop; `url` is SUPABASE_URL."""

    def __init__(self, dsn: str, *, key: str = SERVICE_KEY) -> None:
        self.dsn = dsn
        self.key = key
        self.port = _free_port()
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        # Each: how many requests still run before it, its status, its body.
        self._failures: list[tuple[int, int, dict[str, Any]]] = []
        self._pool: asyncpg.Pool | None = None
        self._types: dict[str, dict[str, str]] = {}
        app = Starlette(
            routes=[
                Route("/rest/v1/rpc/{function}", self._handle_rpc, methods=["POST"]),
                Route("/rest/v1/{table}", self._handle, methods=["GET", "POST", "PATCH", "DELETE"]),
            ],
            lifespan=self._lifespan,
        )
        # asyncio's loop, as every server under test (tests/support/network_guard.py).
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", loop="asyncio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"postgrest-{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int, body: dict[str, Any], *, after: int = 0) -> None:
        """Answer the next request (or the one after `after` more have run) with this error
        instead of running it."""
        self._failures.append((after, status, body))

    def assert_clean(self) -> None:
        """Fail the test if our store sent a request the expectations forbid."""
        assert not self.violations, self.violations

    def __enter__(self) -> FakePostgrest:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake PostgREST did not start")
            self._thread.join(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        rows = await self._pool.fetch(
            "select table_name, column_name, format_type(a.atttypid, a.atttypmod) as type "
            "from information_schema.columns c join pg_attribute a "
            "on a.attrelid = ('public.' || c.table_name)::regclass and a.attname = c.column_name "
            "where c.table_schema = 'public' order by c.ordinal_position"
        )
        for row in rows:
            self._types.setdefault(row["table_name"], {})[row["column_name"]] = row["type"]
        try:
            yield
        finally:
            await self._pool.close()

    async def _handle(self, request: Request) -> Response:
        """A table request: GET, POST, PATCH or DELETE on /<table>."""
        table = request.path_params["table"]
        return await self._answer(request, table, lambda recorded: self._on_table(recorded))

    async def _handle_rpc(self, request: Request) -> Response:
        """POST /rpc/<function>: the JSON body's members are the function's named arguments."""
        function = request.path_params["function"]
        return await self._answer(
            request, f"rpc/{function}", lambda recorded: self._call(function, recorded.body or {})
        )

    async def _answer(
        self, request: Request, target: str, run: Callable[[Recorded], Awaitable[Response]]
    ) -> Response:
        """Record the request, check the key and the expectations, answer a scripted failure or
        run it."""
        raw = await request.body()
        recorded = Recorded(
            request.method,
            target,
            list(request.query_params.multi_items()),
            {name.lower(): value for name, value in request.headers.items()},
            _json_loads(raw) if raw else None,
        )
        self.requests.append(recorded)
        if recorded.headers.get("apikey") != self.key:
            # What Supabase's gateway answers for a wrong key: no PostgREST code in the body.
            return _json({"message": "Invalid API key", "hint": "Double check your key."}, 401)
        if self._failures:
            after, status, body = self._failures.pop(0)
            if after == 0:
                return _json(body, status)
            self._failures.insert(0, (after - 1, status, body))
        try:
            check_request(recorded, self.key)
            return await run(recorded)
        except Violation as e:
            self.violations.append(f"{recorded.method} {target}: {e}")
            return _json({"code": "FAKE0", "message": f"fake PostgREST refused: {e}"}, 400)

    async def _on_table(self, recorded: Recorded) -> Response:
        if recorded.table not in self._types:
            message = f"Could not find the table 'public.{recorded.table}'"
            return _json({"code": "PGRST205", "message": message}, 404)
        return await self._run(recorded)

    async def _call(self, function: str, arguments: dict[str, Any]) -> Response:
        if not _IDENTIFIER.match(function) or not all(map(_IDENTIFIER.match, arguments)):
            raise Violation(f"bad function or argument name in {function}({list(arguments)})")
        # Every argument our store passes is JSON (`jsonb`), as PostgREST would bind it.
        named = ", ".join(f"{name} => ${i}::jsonb" for i, name in enumerate(arguments, 1))
        values = [json.dumps(value) for value in arguments.values()]
        assert self._pool is not None
        try:
            result = await self._pool.fetchval(f"select public.{function}({named})", *values)
        except asyncpg.PostgresError as e:
            return postgres_error(e)
        if result is None:
            return Response(status_code=204)  # PostgREST's answer for a function of no result
        # A scalar as its JSON; `jsonb` comes from the driver as its JSON text already.
        body = result.encode() if isinstance(result, str) else orjson.dumps(result)
        return Response(body, 200, media_type="application/json")

    async def _run(self, recorded: Recorded) -> Response:
        sql = _Sql(recorded.table, self._types[recorded.table])
        prefer = {p.strip() for p in recorded.headers.get("prefer", "").split(",")}
        if recorded.method == "GET":
            text = select_sql(sql, recorded.params)
        elif recorded.method == "POST":
            text = insert_sql(sql, recorded.params, recorded.body, prefer)
        elif recorded.method == "PATCH":
            text = update_sql(sql, recorded.params, recorded.body)
        else:
            text = delete_sql(sql, recorded.params)
        assert self._pool is not None
        try:
            answer = await self._pool.fetchval(text, *sql.params)
        except asyncpg.PostgresError as e:
            return postgres_error(e)
        if recorded.method != "GET" and "return=minimal" in prefer:
            return Response(status_code=201 if recorded.method == "POST" else 204)
        status = 201 if recorded.method == "POST" else 200
        return Response(answer, status, media_type="application/json")


def _json_loads(raw: bytes) -> Any:
    # The standard library's decoder: JSON numbers of any size, as PostgREST takes them (orjson
    # refuses integers beyond 64 bits).
    return json.loads(raw)


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")
