"""`python -m app.serve`: the server on one port with WORKERS processes (`make run`).

Each worker is an instance in the scale-out sense (docs/deployment.md): its own slot, writer and
leases, all on the shared store. One worker (the default) is plain `uvicorn app.main:app`.
"""

from __future__ import annotations

import argparse

import uvicorn

from app.settings import load_settings


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--loop", default="auto", help="uvicorn's event loop (auto, asyncio)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    arguments = _arguments(argv)
    settings = load_settings()  # a wrong setting stops here, naming it, before any worker
    uvicorn.run(
        "app.main:app",
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
