"""Schema versions: numbered SQL steps per dialect, and what every runner checks.

Each dialect has a folder of files `NNNN_what.sql`; file N brings a database from version N-1 to
N. A runner (in the store of that dialect) reads the highest version in `schema_version`, applies
the missing steps in order inside one transaction, and records each one. The PostgreSQL steps are
idempotent (`if not exists`, `create or replace`), so `schema.sql`, which is all of them in order,
can be run by hand on an empty database or on an older one (the Supabase SQL editor path).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.database.base import StoreError

Dialect = Literal["postgres", "sqlite"]

_HERE = Path(__file__).resolve().parent
_STEP_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One step: the SQL that brings the schema from `version - 1` to `version`."""

    version: int
    name: str
    sql: str


def migrations(dialect: Dialect) -> list[Migration]:
    """The steps of a dialect in order; their versions must be 1..N without gaps."""
    steps = []
    for path in sorted((_HERE / dialect).iterdir()):
        match = _STEP_NAME.match(path.name)
        if match:
            steps.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    if [step.version for step in steps] != list(range(1, len(steps) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..N: {[s.name for s in steps]}")
    return steps


def latest_version(dialect: Dialect) -> int:
    """The schema version this code expects."""
    return len(migrations(dialect))


def pending(dialect: Dialect, current: int) -> list[Migration]:
    """The steps a database at `current` still needs; refuses a database newer than the code."""
    latest = latest_version(dialect)
    if current > latest:
        raise StoreError(
            f"the database schema is at version {current}, newer than this app's {latest}: "
            "upgrade the app (it never downgrades a schema)",
            retryable=False,
        )
    return migrations(dialect)[current:]


def sqlite_statements(sql: str) -> list[str]:
    """Split an SQLite script into whole statements (a statement may span lines)."""
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise RuntimeError(f"incomplete SQLite statement in a migration: {buffer!r}")
    return statements


_SCHEMA_SQL_HEADER = """\
-- PostgreSQL / Supabase schema, version {latest}. GENERATED from app/database/migrations/postgres/
-- by `python -m app.database.migrations > schema.sql`; edit the migrations, not this file.
--
-- Applies cleanly to an empty plain PostgreSQL (13+), and upgrades an older one in place: every
-- step is idempotent. The PostgreSQL store applies the same steps by itself at start; run this
-- file by hand only where the app cannot (the Supabase SQL editor, before the REST store).
-- Supabase-only parts (row-level security, grants, policies with auth.uid()) live in
-- supabase/policies.sql, so that plain PostgreSQL needs no `auth` schema.

create table if not exists schema_version (
    version integer not null,
    applied_at timestamptz not null default now()
);
"""


def render_schema_sql() -> str:
    """`schema.sql`: every PostgreSQL step in order, each followed by its version record."""
    parts = [_SCHEMA_SQL_HEADER.format(latest=latest_version("postgres"))]
    for step in migrations("postgres"):
        parts.append(f"\n-- ---------------------------------------------------- {step.name}\n")
        parts.append(step.sql)
        parts.append(
            f"\ninsert into schema_version (version)\n"
            f"select {step.version} where not exists "
            f"(select 1 from schema_version where version = {step.version});\n"
        )
    return "".join(parts)
