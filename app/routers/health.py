"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.database.base import StoreError
from app.routers.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process lives."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the store does not answer"}})
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """200 when the store answers, 503 otherwise; says which store is in use."""
    try:
        await runtime.store.ping()
    except StoreError as e:
        body = {"status": "unavailable", "store": runtime.store.kind, "detail": str(e)}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "store": runtime.store.kind})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text format."""
    runtime.metrics.store_queue_depth.set(runtime.writer.queue_depth)
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
