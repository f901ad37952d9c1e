"""The tools offered to the model: built-in ones (plain typed async functions, turned into
schemas and validated calls here) and those of tool sources (MCP servers), behind one `Tool`
interface the runner calls."""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    create_model,
)

from app.database.base import ProfileRepository
from app.services.llm.base import ToolDefinition


class ToolError(Exception):
    """A failure the model should see as the tool's result (bad input, unknown id, ...)."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may use besides its arguments; tools ask for it by a `ToolContext` parameter."""

    # The demo profiles `fetch_user_profile` answers from.
    profiles: ProfileRepository
    session_id: str
    # Whose session it is (None when auth is off), and the bearer token they connected with:
    # MCP servers get the owner in `_meta`, the token only when their config asks for it.
    owner: str | None = None
    credentials: str | None = field(default=None, repr=False)


ToolFunction = Callable[..., Awaitable[Any]]
_APPROVAL_MARK = "__requires_approval__"


def requires_approval(function: ToolFunction) -> ToolFunction:
    """Declare a built-in tool whose calls wait for the person's approval (it changes data)."""
    setattr(function, _APPROVAL_MARK, True)
    return function


_json_adapter: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)


class _StrictArguments(BaseModel):
    # Models often send ids as numbers ("user_id": 123); accept them as the string they mean.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def _docstring_parts(function: ToolFunction) -> tuple[str, dict[str, str]]:
    """The summary and the `Args:` descriptions of a Google-style docstring."""
    doc = inspect.getdoc(function) or ""
    summary, _, rest = doc.partition("\nArgs:\n")
    described = dict(re.findall(r"^\s+(\w+)(?: \([^)]*\))?: (.+)$", rest, flags=re.MULTILINE))
    return " ".join(summary.split()), described


class Tool(Protocol):
    """What the runner needs of a tool, wherever it comes from."""

    @property
    def name(self) -> str: ...

    @property
    def definition(self) -> ToolDefinition:
        """The schema the model is offered."""
        ...

    @property
    def server(self) -> str | None:
        """The MCP server the tool belongs to; None for built-in tools."""
        ...

    @property
    def timeout_s(self) -> float | None:
        """Its own per-call timeout; None = `TOOL_TIMEOUT_S`."""
        ...

    @property
    def requires_approval(self) -> bool:
        """Whether a call waits for the user's approval (read once tool approval exists)."""
        ...

    async def call(self, raw_arguments: Mapping[str, JsonValue], context: ToolContext) -> JsonValue:
        """Validate the model's arguments, run the tool, return a JSON result or raise
        `ToolError` with what the model should hear."""
        ...


class ToolSource(Protocol):
    """Tools that come and go at run time (the tools of MCP servers)."""

    def tools(self, *, taken: Sequence[str]) -> Sequence[Tool]:
        """The tools offered now; `taken` are names already used (the built-in tools)."""
        ...


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A built-in tool: its function, its arguments model and its schema for the model."""

    name: str
    function: ToolFunction
    arguments: type[BaseModel]
    wants_context: bool
    definition: ToolDefinition
    server: None = None
    timeout_s: None = None
    requires_approval: bool = False

    @classmethod
    def from_function(cls, function: ToolFunction) -> FunctionTool:
        hints = get_type_hints(function)
        summary, described = _docstring_parts(function)
        fields: dict[str, Any] = {}
        wants_context = False
        for name, parameter in inspect.signature(function).parameters.items():
            if hints.get(name) is ToolContext:
                wants_context = True
                continue
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[name] = (hints[name], _field(default, described.get(name)))
        arguments = create_model(
            f"{function.__name__}_arguments", __base__=_StrictArguments, **fields
        )
        schema: dict[str, JsonValue] = arguments.model_json_schema()
        schema.pop("title", None)
        definition: ToolDefinition = {
            "type": "function",
            "function": {"name": function.__name__, "description": summary, "parameters": schema},
        }
        return cls(
            function.__name__,
            function,
            arguments,
            wants_context,
            definition,
            requires_approval=getattr(function, _APPROVAL_MARK, False),
        )

    async def call(self, raw_arguments: Mapping[str, JsonValue], context: ToolContext) -> JsonValue:
        """Validate the model's arguments, run the tool, and return a JSON result."""
        try:
            arguments = self.arguments.model_validate(raw_arguments)
        except ValidationError as e:
            raise ToolError(f"invalid arguments: {_short_errors(e)}") from e
        values = {name: getattr(arguments, name) for name in type(arguments).model_fields}
        if self.wants_context:
            result = await self.function(context, **values)
        else:
            result = await self.function(**values)
        return _json_adapter.validate_python(result)


def _field(default: Any, description: str | None) -> Any:
    return Field(default=default, description=description)


def _short_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


class ToolRegistry:
    """The tools offered to the model, by name: the built-in ones, then those of the sources
    as they are now (a source's tools change when its server's list does)."""

    def __init__(
        self,
        functions: Sequence[ToolFunction],
        *,
        sources: Sequence[ToolSource] = (),
        approval_patterns: Sequence[str] = (),
    ) -> None:
        self._builtin: dict[str, Tool] = {
            tool.name: tool for tool in map(FunctionTool.from_function, functions)
        }
        self._sources = list(sources)
        # TOOLS_REQUIRE_APPROVAL: glob patterns of names, on top of what tools declare.
        self._approval_patterns = tuple(approval_patterns)

    def needs_approval(self, name: str) -> bool:
        """A call of `name` waits for the person's approval: the tool (or its MCP server's
        config) says so, or TOOLS_REQUIRE_APPROVAL names it. Unknown names never run anyway."""
        tool = self.get(name)
        if tool is None:
            return False
        return tool.requires_approval or any(
            fnmatch.fnmatchcase(name, pattern) for pattern in self._approval_patterns
        )

    def _all(self) -> dict[str, Tool]:
        tools = dict(self._builtin)
        for source in self._sources:
            for tool in source.tools(taken=list(tools)):
                tools.setdefault(tool.name, tool)
        return tools

    def get(self, name: str) -> Tool | None:
        return self._all().get(name)

    @property
    def names(self) -> list[str]:
        return list(self._all())

    def definitions(self) -> list[ToolDefinition]:
        return [tool.definition for tool in self._all().values()]
