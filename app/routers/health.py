"""Liveness, readiness and metrics."""

from __future__ import annotations

import os

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


@router.get(
    "/readyz",
    responses={503: {"description": "the store does not answer, or a service is restarting"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """200 when the store answers and every background service (the event writer, the lease
    heartbeat, the summary poll) runs; 503 otherwise. Says which store is in use."""
    services = {
        health.name: {"running": health.running, "restarts": health.restarts}
        | ({"last_error": health.last_error} if health.last_error else {})
        for health in runtime.supervisor.services
    }
    instance = {"id": runtime.slot.instance_id, "slot": runtime.slot.number, "pid": os.getpid()}
    body: dict[str, object] = {
        "store": runtime.store.kind,
        "services": services,
        # Which instance (with WORKERS > 1: which worker process) answered.
        "instance": instance,
    }
    if runtime.mcp is not None:
        # Details only: a degraded MCP server costs its tools, not the server's readiness.
        body["mcp_servers"] = runtime.mcp.health()
    try:
        await runtime.store.ping()
    except StoreError as e:
        return JSONResponse(body | {"status": "unavailable", "detail": str(e)}, status_code=503)
    down = sorted(name for name, state in services.items() if not state["running"])
    if down:
        detail = f"restarting: {', '.join(down)}"
        return JSONResponse(body | {"status": "unavailable", "detail": detail}, status_code=503)
    return JSONResponse(body | {"status": "ready"})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text format."""
    runtime.metrics.store_queue_depth.set(runtime.writer.queue_depth)
    for health in runtime.supervisor.services:
        runtime.metrics.service_restarts.labels(service=health.name).set(health.restarts)
    if runtime.mcp is not None:
        for link in runtime.mcp.links:
            up = 1 if link.health.state.value == "ready" else 0
            runtime.metrics.mcp_server_up.labels(server=link.name).set(up)
            runtime.metrics.mcp_server_restarts.labels(server=link.name).set(link.health.restarts)
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
