"""The current date and time in any IANA time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import JsonValue

from app.services.tools.registry import ToolError


async def get_current_time(timezone: str = "UTC") -> dict[str, JsonValue]:
    """Get the current date and time in a time zone.

    Args:
        timezone: An IANA time zone name such as "Europe/Paris" or "America/New_York".
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ToolError(f"unknown time zone {timezone!r}") from e
    now = datetime.now(zone)
    return {"timezone": timezone, "iso": now.isoformat(), "weekday": now.strftime("%A")}
