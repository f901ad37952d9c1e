"""REST: list, read and delete sessions and their events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response

from app.protocol import MAX_SEQ, EventPage, SessionPage, SessionView
from app.routers.deps import OwnerDep, RuntimeDep
from app.services.sessions import InvalidCursor, SessionNotFound

router = APIRouter(prefix="/api/sessions", tags=["sessions"])

# Seqs are 64-bit integers in every store (MAX_SEQ); larger values are a client's mistake (422).
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such session"}}


@router.get("", responses={400: {"description": "bad cursor"}})
async def list_sessions(
    runtime: RuntimeDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(max_length=512)] = None,
) -> SessionPage:
    """Sessions, newest first; pass `next` as `before` for the following page."""
    try:
        return await runtime.sessions.list(limit=limit, before=before, owner=owner)
    except InvalidCursor as e:
        raise HTTPException(status_code=400, detail="invalid cursor in 'before'") from e


@router.get("/{session_id}", responses=_NOT_FOUND)
async def get_session(session_id: str, runtime: RuntimeDep, owner: OwnerDep) -> SessionView:
    try:
        return await runtime.sessions.detail(await runtime.sessions.get(session_id, owner=owner))
    except SessionNotFound as e:
        raise HTTPException(status_code=404, detail="session not found") from e


@router.get("/{session_id}/events", responses=_NOT_FOUND)
async def list_events(
    session_id: str,
    runtime: RuntimeDep,
    owner: OwnerDep,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> EventPage:
    """Stored events with `seq > after_seq`, oldest first."""
    try:
        return await runtime.sessions.events(
            session_id, after_seq=after_seq, limit=limit, owner=owner
        )
    except SessionNotFound as e:
        raise HTTPException(status_code=404, detail="session not found") from e


@router.delete("/{session_id}", status_code=204, responses=_NOT_FOUND)
async def delete_session(session_id: str, runtime: RuntimeDep, owner: OwnerDep) -> Response:
    """Delete the session and its events; a connection open on it ends (`session_not_found`)."""
    try:
        await runtime.sessions.delete(session_id, owner=owner)
    except SessionNotFound as e:
        raise HTTPException(status_code=404, detail="session not found") from e
    return Response(status_code=204)
