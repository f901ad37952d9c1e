"""`python -m app.serve`: the server on one port with WORKERS processes (`make run`).

Each worker is an instance in the scale-out sense (docs/deployment.md): its own slot, writer and
leases, all on the shared store. One worker (the default) is plain `uvicorn app.main:app`.
With more, each worker stops (SIGTERM: it drains as on any stop) when the process that started
them dies, a SIGKILL included: no worker, and none of its MCP servers, is left serving alone.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import uvicorn
from starlette.types import ASGIApp

from app.services.mcp.launcher import die_with_parent
from app.settings import load_settings

# The supervising process's pid, for its workers to check that it still lives.
SUPERVISOR_PID = "APP_SERVE_SUPERVISOR_PID"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--loop", default="auto", help="uvicorn's event loop (auto, asyncio)")
    return parser.parse_args(argv)


def worker_app() -> ASGIApp:
    """The app of one worker (uvicorn's factory, called in the worker), which first asks to be
    stopped when its supervisor dies."""
    if sys.platform.startswith("linux"):
        die_with_parent(signal.SIGTERM)
    if os.getppid() != int(os.environ.get(SUPERVISOR_PID, os.getppid())):
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor died before the request was made
    # Imported here: the supervisor itself never builds the app.
    from app.main import app

    return app


def main(argv: list[str] | None = None) -> None:
    arguments = _arguments(argv)
    settings = load_settings()  # a wrong setting stops here, naming it, before any worker
    several = settings.workers > 1
    if several:
        os.environ[SUPERVISOR_PID] = str(os.getpid())
    uvicorn.run(
        "app.serve:worker_app" if several else "app.main:app",
        factory=several,
        host=arguments.host,
        port=arguments.port,
        loop=arguments.loop,
        workers=settings.workers,
        ws_per_message_deflate=False,
        # The app alone judges X-Forwarded-For (TRUSTED_PROXIES, docs/operations.md).
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
