"""The local model's prompt: ChatML plus llama.cpp's function-calling format, and its grammars.

The format is the one of llama.cpp's `chatml-function-calling` chat handler: the system message
lists each tool as `functions.<name>:` with its JSON schema; the model starts its answer with
either `message:` or `functions.<name>:` followed by the arguments as JSON. Grammars constrain
the choice and the arguments, so even a tiny model can only produce a valid call.

We render the prompt ourselves because that handler drops `tool` messages from the prompt (the
model would never see a tool's result) and constrains a plain answer with the tool-choice
grammar (so the text comes out empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import assert_never

from app.services.llm.base import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    RequestPart,
    SystemPart,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolReturnPart,
    UserPart,
)

ANSWER_MARK = "message:"
CALL_PREFIX = "functions."
END_OF_TURN = "<|im_end|>"

# A compact catalogue and one worked example: measured with SmolLM2-135M, JSON schemas in the
# prompt or a placeholder example make it copy placeholders (`"{{user_id}}"`) instead of values.
_TOOL_INSTRUCTIONS = """

You can call these functions:
{catalogue}
Answer either with a message or with a function call.
For a message, start with 'message:' on its own line, then the text.
For a function call, start with 'functions.<name>:' on its own line, then the arguments as JSON, \
with values taken from the user's words.
Example: for "Show me the order 77" you would answer:
functions.get_order:
{{"order_id": "77"}}"""


def _turn(role: str, content: str) -> str:
    return f"<|im_start|>{role}\n{content}{END_OF_TURN}\n"


def _signature(tool: ToolDefinition) -> str:
    """`functions.name(arg: type, ...): description`; the grammar enforces the full schema."""
    function = tool["function"]
    properties = function["parameters"].get("properties")
    arguments = []
    if isinstance(properties, dict):
        for name, schema in properties.items():
            kind = schema.get("type", "any") if isinstance(schema, dict) else "any"
            arguments.append(f"{name}: {kind}")
    return f"{CALL_PREFIX}{function['name']}({', '.join(arguments)}): {function['description']}"


def _catalogue(tools: Sequence[ToolDefinition]) -> str:
    return "\n".join(_signature(tool) for tool in tools)


def _render_request_part(part: RequestPart, tool_instructions: str) -> str:
    if isinstance(part, SystemPart):
        return _turn("system", part.content + tool_instructions)
    if isinstance(part, UserPart):
        return _turn("user", part.content)
    if isinstance(part, ToolReturnPart):
        return _turn("tool", f"{CALL_PREFIX}{part.name} returned:\n{part.content}")
    assert_never(part)


def _render_response(message: ModelResponse) -> str:
    lines: list[str] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            if part.content:
                lines.append(f"{ANSWER_MARK}\n{part.content}")
        elif isinstance(part, ToolCallPart):
            lines.append(f"{CALL_PREFIX}{part.name}:\n{part.arguments}")
        else:
            assert_never(part)
    return _turn("assistant", "\n".join(lines))


def render_prompt(messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> str:
    """The whole prompt, ending where the assistant's next turn begins."""
    instructions = _TOOL_INSTRUCTIONS.format(catalogue=_catalogue(tools)) if tools else ""
    rendered: list[str] = []
    for message in messages:
        if isinstance(message, ModelRequest):
            rendered.extend(_render_request_part(part, instructions) for part in message.parts)
        elif isinstance(message, ModelResponse):
            rendered.append(_render_response(message))
        else:
            assert_never(message)
    return "".join(rendered) + "<|im_start|>assistant\n"


def tools_to_offer(
    messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
) -> Sequence[ToolDefinition]:
    """The tools the model may call now: none once this turn already has a tool result.

    A small model asked again after a result tends to call the same tool forever; one round
    of tools, then an answer, keeps it useful.
    """
    for message in reversed(messages):
        if not isinstance(message, ModelRequest):
            continue
        for part in reversed(message.parts):
            if isinstance(part, ToolReturnPart):
                return ()
            if isinstance(part, UserPart):
                return tools
    return tools


def choice_grammar(tools: Sequence[ToolDefinition]) -> str:
    """GBNF that allows exactly `message:` or `functions.<name>:` for one of the tools."""
    options = [f'"{ANSWER_MARK}"']
    options += [f'"{CALL_PREFIX}{tool["function"]["name"]}:"' for tool in tools]
    return f"root ::= {' | '.join(options)}\n"


def chosen_tool(choice: str, tools: Sequence[ToolDefinition]) -> ToolDefinition | None:
    """The tool the grammar-constrained choice names, or None for a message."""
    for tool in tools:
        if choice.strip() == f"{CALL_PREFIX}{tool['function']['name']}:":
            return tool
    return None
