"""One SQL implementation of the store's seams, shared by SQLite and PostgreSQL.

Queries are written once with `:name` parameters and the functions both databases have under the
same name (`now()`; `seconds_from_now(s)`, which the PostgreSQL schema defines and the SQLite
store registers on its connection). A `Dialect` compiles them to the driver's numbered
placeholders (`$1` for asyncpg, `?1` for sqlite3), expands list parameters for `in (...)`, and
converts times, which SQLite keeps as fixed-width UTC text. A `SqlRunner` runs them: reads, and
writes that commit on their own. The event append, which needs more than one statement, is each
store's own (see `sqlite.py` and the `append_session_events` function of the PostgreSQL schema).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal, Protocol

from app.database.base import Row

Params = Mapping[str, object]
DialectName = Literal["sqlite", "postgres"]

_PARAMETER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
SQLITE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def sqlite_time(moment: datetime) -> str:
    """A time as SQLite keeps it: fixed width, UTC, so text order is time order."""
    return moment.astimezone(UTC).strftime(SQLITE_TIME_FORMAT)


def canonical_id(session_id: str) -> str | None:
    """The canonical form of a session id; None when it is not a UUID (it names no session)."""
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells placeholders and keeps times."""

    name: DialectName

    def compile(self, sql: str, params: Params) -> tuple[str, list[object]]:
        """The statement with numbered placeholders, and the values in their order."""
        lengths = tuple(
            (name, len(value)) for name, value in params.items() if isinstance(value, list | tuple)
        )
        text, order = _compiled(sql, self.name, lengths)
        values: list[object] = []
        for name, index in order:
            value = params[name]
            values.append(self._value(value[index] if index is not None else value))  # type: ignore[index]
        return text, values

    def _value(self, value: object) -> object:
        if self.name == "sqlite" and isinstance(value, datetime):
            return sqlite_time(value)
        return value

    def read_time(self, value: object) -> datetime:
        """A time column's value as an aware datetime."""
        if isinstance(value, datetime):
            return value
        return datetime.strptime(str(value), SQLITE_TIME_FORMAT).replace(tzinfo=UTC)


@lru_cache(maxsize=512)
def _compiled(
    sql: str, dialect: DialectName, lengths: tuple[tuple[str, int], ...]
) -> tuple[str, list[tuple[str, int | None]]]:
    """Placeholders numbered in order of first use; a list parameter becomes one per item."""
    list_lengths = dict(lengths)
    numbers: dict[tuple[str, int | None], int] = {}
    mark = "$" if dialect == "postgres" else "?"

    def number(key: tuple[str, int | None]) -> str:
        if key not in numbers:
            numbers[key] = len(numbers) + 1
        return f"{mark}{numbers[key]}"

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in list_lengths:
            if list_lengths[name] == 0:
                return "null"  # `x in (null)` holds for no row
            return ", ".join(number((name, i)) for i in range(list_lengths[name]))
        return number((name, None))

    text = _PARAMETER.sub(replace, sql)
    return text, sorted(numbers, key=numbers.__getitem__)


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgres")


class SqlRunner(Protocol):
    """Runs compiled statements on one database; driver errors leave as `StoreError`s."""

    @property
    def dialect(self) -> Dialect: ...

    async def read(self, sql: str, params: Params) -> list[Row]: ...

    async def write(self, sql: str, params: Params) -> int:
        """Run one statement in its own transaction and commit it; the rows it touched."""
        ...

    async def write_returning(self, sql: str, params: Params) -> list[Row]:
        """`write` for a statement with a `returning` clause: the rows it returned."""
        ...

    async def write_many(self, sql: str, params: Sequence[Params]) -> None:
        """Run one statement once per parameter set, all in one transaction."""
        ...
