"""Request dependencies as `Annotated` aliases: the runtime, and who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from app.services.auth import AuthUnavailable, Unauthorized
from app.services.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The credential from `Authorization: Bearer …`, else from the `token` query parameter."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token


async def get_owner(request: Request, runtime: RuntimeDep) -> str | None:
    token = bearer_token(request.headers.get("authorization"), request.query_params.get("token"))
    try:
        owner = await runtime.auth.owner_of(token)
    except Unauthorized as e:
        raise HTTPException(
            status_code=401, detail=str(e), headers={"WWW-Authenticate": "Bearer"}
        ) from e
    except AuthUnavailable as e:
        raise HTTPException(
            status_code=503, detail=str(e), headers={"Retry-After": str(e.retry_after_s)}
        ) from e
    runtime.tracing.note_owner(owner)
    return owner


OwnerDep = Annotated[str | None, Depends(get_owner)]
