"""The application: `create_app(settings)` builds it; `uvicorn app.main:app` serves `app`."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from app.database.base import StoreError
from app.logs import configure_logging
from app.routers import ai_sdk, ai_sdk_ws, health, page, sessions, usage, ws
from app.routers.hosts import AllowedHostsMiddleware
from app.routers.page import STATIC_DIR, mount_examples
from app.routers.request_spans import RequestSpans
from app.services.runtime import drain_on_signals, start_runtime, stop_runtime
from app.services.tools import DEFAULT_TOOLS, ToolFunction
from app.settings import Settings, load_settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

# Pages served from this machine, on any port (a front-end's dev server), as for /ws's Origin rule.
LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"

# Seconds a client is told to wait before trying a request the store could not answer.
STORE_RETRY_AFTER_S = 2


async def store_unavailable(request: Request, error: Exception) -> JSONResponse:
    """A REST request the store could not answer: 503 and when to try again, never a 500."""
    return JSONResponse(
        {"detail": "the store is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


def create_app(
    settings: Settings | None = None,
    *,
    tools: Sequence[ToolFunction] = DEFAULT_TOOLS,
    span_exporter: SpanExporter | None = None,
) -> FastAPI:
    """Build the app; everything it runs on is created in its lifespan, not here. Spans go to
    `span_exporter` when given (tests), else over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    settings = settings or load_settings()
    configure_logging(
        level=settings.log_level,
        json_lines=settings.log_format == "json",
        secrets=settings.secret_values(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await start_runtime(settings, tools=tools, span_exporter=span_exporter)
        app.state.runtime = runtime
        # The OpenAPI schema (cached by FastAPI) takes ~100 ms of CPU to build: built here in a
        # thread, so the first request for /openapi.json never holds up the event loop.
        await asyncio.to_thread(app.openapi)
        if settings.gc_freeze:
            # Everything made so far (modules, schemas, the runtime) lives as long as the
            # process: out of the collector's sight, a full collection no longer walks it, which
            # took 50-170 ms of the event loop under load (docs/performance.md, "GC pauses").
            gc.freeze()
        drain_on_signals(runtime)
        try:
            yield
        finally:
            await stop_runtime(runtime)

    app = FastAPI(
        title="Realtime conversation server",
        version="1.0.0",
        summary="Stream LLM conversations over a WebSocket, with tools, storage and summaries.",
        lifespan=lifespan,
        # One schema per model: `ToolResultEvent` serializes through a wrap serializer, whose
        # output schema would otherwise lose its fields.
        separate_input_output_schemas=False,
    )
    app.add_exception_handler(StoreError, store_unavailable)
    app.add_middleware(AllowedHostsMiddleware, allowed_hosts=settings.allowed_hosts)
    # Browser front-ends on another origin (a useChat app, docs/ai-sdk.md) may call the HTTP
    # API: the origins that may open /ws may also read its answers.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[origin.rstrip("/") for origin in settings.allowed_origins],
        allow_origin_regex=LOCAL_ORIGINS,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["authorization", "content-type"],
        max_age=600,
    )
    # Outermost: a request refused for its Host is traced too.
    app.add_middleware(RequestSpans)
    app.include_router(ws.router)
    app.include_router(sessions.router)
    app.include_router(usage.router)
    app.include_router(ai_sdk.router)
    app.include_router(ai_sdk_ws.router)
    app.include_router(health.router)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    mount_examples(app)
    return app


app = create_app()
