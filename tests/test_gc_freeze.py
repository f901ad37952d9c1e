"""GC_FREEZE: a server moves what it made at start out of the collector's full collections
(docs/performance.md, "GC pauses"). Checked in a process of its own: freezing the test
process would keep every later test's garbage."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.support.violations import child_env

ROOT = Path(__file__).resolve().parents[1]

# Starts the app's lifespan (the whole runtime, on SQLite) and prints the frozen object count.
_PROBE = """
import asyncio, gc
from app.main import create_app

async def main():
    app = create_app()
    async with app.router.lifespan_context(app):
        print(gc.get_freeze_count())

asyncio.run(main())
"""


@pytest.mark.parametrize(("setting", "frozen"), [("true", True), ("false", False)])
async def test_the_objects_made_at_start_are_frozen_when_gc_freeze_is_on(
    tmp_path: Path, setting: str, frozen: bool
) -> None:
    env = {
        **os.environ,
        **child_env(),
        "GC_FREEZE": setting,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "STATE_DIR": str(tmp_path / "state"),
        "LLM_PROVIDER": "groq",
        "GROQ_API_KEY": "unused",
        "LOG_LEVEL": "WARNING",
    }
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PROBE,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(probe.communicate(), 60)
    assert probe.returncode == 0, err.decode()
    count = int(out.decode().split()[-1])
    assert (count > 10_000) is frozen  # the app, its modules and schemas: far more than 10,000
