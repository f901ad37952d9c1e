"""`make soak`: many sessions talking for a while, and the server's memory staying flat.

SOAK_SESSIONS sessions (default 200) talk for SOAK_SECONDS (default 60) to our server in its own
process, answered by the tests' fake Groq (20-token answers), each reading for a second between
messages. Passes with zero errors, every exchange stored exactly once with gapless seqs, and
server memory (RSS) growing less than SOAK_RSS_GROWTH_MIB (default 40) between the end of the
warm-up (the first third) and the end. The suite's short, untimed run of the same load is
`tests/soak/test_soak.py`; results are recorded in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.fakes.groq_server import FakeGroq
from tests.soak.conversations import (
    Tally,
    answer_every_message,
    assert_stored_once,
    server_env,
    talk,
)
from tests.support.process import ServerProcess

SESSIONS = int(os.environ.get("SOAK_SESSIONS", "200"))
SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
RSS_GROWTH_MIB = float(os.environ.get("SOAK_RSS_GROWTH_MIB", "40"))
# A person reads the answer before writing again: the load is many open, talking sessions.
THINK_S = 1.0


async def _rss_after(server: ServerProcess, seconds: float) -> float:
    await asyncio.sleep(seconds)  # a sampling point of a timed run
    return server.rss_mib()


async def _soak(server: ServerProcess, database: Path) -> tuple[Tally, float, float]:
    """Run the load; the tally, and the server's RSS after warm-up and at the end."""
    tally = Tally()
    deadline = time.monotonic() + SECONDS
    warm = asyncio.create_task(_rss_after(server, SECONDS / 3))

    def more(_: int) -> bool:
        return time.monotonic() < deadline

    sessions = [talk(server.ws_url, tally, more=more, think_s=THINK_S) for _ in range(SESSIONS)]
    await asyncio.gather(*sessions)
    warm_rss, end_rss = await warm, server.rss_mib()
    await assert_stored_once(database, tally)
    return tally, warm_rss, end_rss


async def main() -> int:
    with FakeGroq() as fake, tempfile.TemporaryDirectory() as folder:
        answer_every_message(fake, delay_s=0.01)
        database = Path(folder) / "app.db"
        server = ServerProcess(server_env(fake, database), Path(folder)).start()
        try:
            tally, warm_rss, end_rss = await _soak(server, database)
        finally:
            server.stop()
    exchanges = sum(tally.exchanges.values())
    print(
        f"soak: {SESSIONS} sessions, {exchanges} exchanges in {SECONDS:g} s, "
        f"{len(tally.failures)} errors, every exchange stored once, server RSS "
        f"{warm_rss:.1f} MiB after warm-up, {end_rss:.1f} MiB at the end"
    )
    problems = [f"errors: {tally.failures[:5]}"] if tally.failures else []
    if len(tally.exchanges) != SESSIONS or min(tally.exchanges.values()) < 1:
        problems.append("not every session completed an exchange")
    if end_rss - warm_rss >= RSS_GROWTH_MIB:
        problems.append(f"server memory grew {end_rss - warm_rss:.1f} MiB after warm-up")
    for problem in problems:
        print(f"soak failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
