"""An MCP `CallToolResult` as a tool result the model reads (or a `ToolError` it sees)."""

from __future__ import annotations

import base64
import binascii

import mcp_types as types
from pydantic import JsonValue, TypeAdapter, ValidationError

from app.services.tools.registry import ToolError

_json_adapter: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)


def tool_result(result: types.CallToolResult) -> JsonValue:
    """`structuredContent` when the server gave it, else the text of the content blocks.

    Images, audio and binary resources are not sent to a text model: a short note stands in
    for each. `isError` raises `ToolError` with the server's text, which the model sees.
    """
    text = "\n".join(_block_text(block) for block in result.content)
    if result.is_error:
        raise ToolError(text or "the tool reported an error")
    if result.structured_content is not None:
        try:
            return _json_adapter.validate_python(result.structured_content)
        except ValidationError:
            pass  # not JSON after all (never from a wire message); the text still stands
    return text


def _block_text(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        return f"[{kind} not shown: {block.mime_type}, {_size(block.data)}]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {block.uri}]"
    resource = block.resource
    if isinstance(resource, types.TextResourceContents):
        return resource.text
    mime = resource.mime_type or "binary"
    return f"[binary resource not shown: {resource.uri} ({mime}, {_size(resource.blob)})]"


def _size(data: str) -> str:
    try:
        count = len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        count = len(data)
    return f"{count} bytes" if count < 1024 else f"{count / 1024:.1f} KiB"
