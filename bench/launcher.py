"""What uvicorn serves in a benchmark: our app or the raw relay, with an event-loop lag probe.

``uvicorn bench.launcher:create_target --factory`` with ``BENCH_TARGET=app`` (our
``create_app(load_settings())``, configured by the usual environment variables) or
``BENCH_TARGET=relay`` (``bench.relay.RawRelay`` on ``BENCH_UPSTREAM``). The probe lives here, in
the benchmark's own launcher, not in the app: a task that sleeps 5 ms at a time and records how
late it wakes up, read (and reset) with ``GET /__bench/lag``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson

from bench.relay import Message, RawRelay, Receive, Scope, Send

_TICK_S = 0.005
_LAG_PATH = "/__bench/lag"


def quantile(values: list[float], q: float) -> float:
    """The `q` quantile (nearest rank) of `values`; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LagProbe:
    """Wraps an ASGI app: samples event-loop lag and serves it at `/__bench/lag`."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lags_ms: list[float] = []
        self._sampler: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self._sampler = asyncio.create_task(self._sample(), name="bench-lag-probe")
            try:
                await self._app(scope, receive, send)
            finally:
                self._sampler.cancel()
        elif scope["type"] == "http" and scope["path"] == _LAG_PATH:
            await self._report(send)
        else:
            await self._app(scope, receive, send)

    async def _sample(self) -> None:
        # perf_counter, not loop.time(): uvloop's clock has millisecond resolution.
        while True:
            before = time.perf_counter()
            await asyncio.sleep(_TICK_S)
            self._lags_ms.append((time.perf_counter() - before - _TICK_S) * 1000)

    async def _report(self, send: Send) -> None:
        lags, self._lags_ms = self._lags_ms, []
        stats = {
            "samples": len(lags),
            "p50_ms": quantile(lags, 0.50),
            "p99_ms": quantile(lags, 0.99),
            "max_ms": max(lags, default=0.0),
        }
        headers = [(b"content-type", b"application/json")]
        start: Message = {"type": "http.response.start", "status": 200, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": orjson.dumps(stats)})


def create_target() -> LagProbe:
    """The uvicorn factory: the target named by `BENCH_TARGET`, wrapped in the lag probe."""
    if os.environ.get("BENCH_TARGET") == "relay":
        coalesce_ms = float(os.environ.get("BENCH_COALESCE_MS", "0"))
        return LagProbe(RawRelay(os.environ["BENCH_UPSTREAM"], coalesce_ms=coalesce_ms))
    from app.main import create_app  # imported here: the relay process does not load the app
    from app.settings import load_settings

    return LagProbe(create_app(load_settings()))
