"""The `MCP_CONFIG` file: `{"mcpServers": {"<name>": {...}}}`, the format teams already keep.

A server is stdio (`command`, `args`, `env`) or streamable HTTP (`url`, `headers`); either may
have `tools` (an allow-list), `timeout` (seconds per call), `requireApproval` (true, false or a
list of tool names) and `forwardCredentials` (pass the caller's bearer token in `_meta`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

_SERVER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SECRET_NAME = re.compile(r"auth|token|key|secret|password|cookie|credential", re.IGNORECASE)


class _ServerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    tools: list[str] | None = Field(default=None, description="Only these tools are offered.")
    timeout: float | None = Field(default=None, gt=0, le=3600)
    require_approval: StrictBool | list[str] = Field(default=False, alias="requireApproval")
    forward_credentials: bool = Field(default=False, alias="forwardCredentials")
    # Some files mark a server `"disabled": true` instead of deleting it.
    disabled: bool = False

    def requires_approval(self, tool: str) -> bool:
        """Whether calls of `tool` wait for the user's approval (once tool approval exists)."""
        if isinstance(self.require_approval, bool):
            return self.require_approval
        return tool in self.require_approval


class StdioServerConfig(_ServerBase):
    """A server this app starts as a child process and talks to over stdin/stdout."""

    kind: Literal["stdio"] = "stdio"
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None


class HttpServerConfig(_ServerBase):
    """A server already running somewhere, reached over streamable HTTP."""

    kind: Literal["http"] = "http"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {value!r})")
        return value


ServerConfig = Annotated[StdioServerConfig | HttpServerConfig, Field(discriminator="kind")]


class McpConfig(BaseModel):
    """The parsed file: its servers by name, in the file's order."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    servers: dict[str, ServerConfig] = Field(default_factory=dict, alias="mcpServers")

    @field_validator("servers", mode="before")
    @classmethod
    def _tag_kinds(cls, value: object) -> object:
        # The file has no `type` field to tell the kinds apart: `url` means HTTP.
        if not isinstance(value, dict):
            return value
        return {name: _with_kind(server) for name, server in value.items()}

    @field_validator("servers")
    @classmethod
    def _names(cls, value: dict[str, ServerConfig]) -> dict[str, ServerConfig]:
        for name in value:
            if not _SERVER_NAME.fullmatch(name):
                raise ValueError(
                    f"server name {name!r}: use letters, digits, '_', '-' or '.' (1-64)"
                )
        return value

    def enabled(self) -> dict[str, ServerConfig]:
        return {name: server for name, server in self.servers.items() if not server.disabled}

    def secret_values(self) -> list[str]:
        """Values of headers and environment variables whose names say they are secret (tokens,
        keys, passwords), so that logging can redact them."""
        values: list[str] = []
        for server in self.servers.values():
            named = server.headers if isinstance(server, HttpServerConfig) else server.env
            values += [value for key, value in named.items() if _SECRET_NAME.search(key)]
        return [value for value in values if value]


def _with_kind(server: object) -> object:
    if not isinstance(server, dict) or "kind" in server:
        return server
    kind = "http" if "url" in server else "stdio"
    # Some files write `"type": "stdio" | "http" | "streamable-http"`; the fields decide.
    rest = {key: value for key, value in server.items() if key != "type"}
    return {"kind": kind, **rest}


class McpConfigError(ValueError):
    """The file is missing, not JSON, or not of the expected shape; the message names it."""


def load_mcp_config(path: str) -> McpConfig:
    """Read and check the file at `path`, or raise `McpConfigError` naming it."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise McpConfigError(f"{path}: cannot be read ({e.strerror or e})") from e
    except json.JSONDecodeError as e:
        raise McpConfigError(f"{path}: not JSON ({e})") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("mcpServers"), dict):
        raise McpConfigError(f'{path}: expected an object {{"mcpServers": {{...}}}}')
    try:
        return McpConfig.model_validate(raw)
    except ValidationError as e:
        raise McpConfigError(f"{path}: {_short_errors(e)}") from e


def _short_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        # `kind` is ours, not the file's: leave it out of the path shown.
        where = ".".join(str(part) for part in item["loc"] if part not in ("stdio", "http"))
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
