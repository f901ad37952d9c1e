"""Recovering a tool call from Groq's `tool_use_failed` error.

When the model writes a tool call Groq cannot parse, Groq answers 400 `tool_use_failed` with the
raw text in `failed_generation`: often Llama's dialect `<function=NAME{json}</function>`,
sometimes JSON `{"name": ..., "arguments": {...}}`. When that text is a call, we run it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson

from app.services.llm.base import ToolCallRequest

_FUNCTION_TAG = re.compile(r"<function=([A-Za-z0-9_.-]+)>?\s*(\{.*?\})\s*</function>", re.DOTALL)


def _call(name: object, arguments: object) -> ToolCallRequest | None:
    if not isinstance(name, str) or not name:
        return None
    if isinstance(arguments, str):
        text = arguments
    elif isinstance(arguments, dict):
        text = orjson.dumps(arguments).decode()
    else:
        return None
    return ToolCallRequest(call_id=f"call_{uuid.uuid4().hex[:12]}", name=name, arguments=text)


def _from_tags(text: str) -> list[ToolCallRequest]:
    calls = [_call(name, arguments) for name, arguments in _FUNCTION_TAG.findall(text)]
    return [call for call in calls if call is not None]


def _from_json(text: str) -> list[ToolCallRequest]:
    try:
        value: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return []
        call = _call(item.get("name"), item.get("arguments", item.get("parameters")))
        if call is None:
            return []
        calls.append(call)
    return calls


def recover_tool_calls(failed_generation: object) -> list[ToolCallRequest]:
    """The calls written in `failed_generation`, or [] when it is not a call."""
    if not isinstance(failed_generation, str) or not failed_generation.strip():
        return []
    return _from_tags(failed_generation) or _from_json(failed_generation.strip())
