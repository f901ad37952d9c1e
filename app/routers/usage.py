"""REST: the caller's usage and limits."""

from __future__ import annotations

from fastapi import APIRouter

from app.protocol import UsageView
from app.routers.deps import OwnerDep, RuntimeDep

router = APIRouter(prefix="/api/usage", tags=["usage"])


@router.get("")
async def get_usage(runtime: RuntimeDep, owner: OwnerDep) -> UsageView:
    """Tokens today, new sessions this hour and live sessions of the caller, with the limits."""
    return await runtime.hub.usage.report(owner)
