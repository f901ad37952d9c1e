"""Print `schema.sql` (all PostgreSQL migrations in order): `python -m app.database.migrations`."""

from app.database.migrations import render_schema_sql

print(render_schema_sql(), end="")
