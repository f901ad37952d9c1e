"""The tools the model may call. Adding a tool: write one typed async function in one module
of this package and list it in `DEFAULT_TOOLS`."""

from __future__ import annotations

from app.services.tools.calculator import calculate
from app.services.tools.clock import get_current_time
from app.services.tools.profiles import DEMO_PROFILES, fetch_user_profile, update_user_plan
from app.services.tools.registry import (
    Tool,
    ToolContext,
    ToolError,
    ToolFunction,
    ToolRegistry,
    ToolSource,
    requires_approval,
)

DEFAULT_TOOLS: list[ToolFunction] = [
    fetch_user_profile,
    get_current_time,
    calculate,
    update_user_plan,
]

__all__ = [
    "DEFAULT_TOOLS",
    "DEMO_PROFILES",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolFunction",
    "ToolRegistry",
    "ToolSource",
    "requires_approval",
]
