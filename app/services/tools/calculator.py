"""Exact arithmetic, so the model does not have to guess sums."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from decimal import Decimal, DivisionByZero, InvalidOperation

from pydantic import JsonValue

from app.services.tools.registry import ToolError

_BINARY: dict[type[ast.operator], Callable[[Decimal, Decimal], Decimal]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_MAX_EXPRESSION_CHARS = 200
_MAX_POWER = 100


def _evaluate(node: ast.expr) -> Decimal:
    # Only numbers and arithmetic operators: no names, calls or attributes can run.
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Decimal(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        exponent = _evaluate(node.right)
        if abs(exponent) > _MAX_POWER:
            raise ToolError(f"exponent larger than {_MAX_POWER}")
        return _evaluate(node.left) ** exponent
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ToolError("only numbers, parentheses and + - * / // % ** are allowed")


async def calculate(expression: str) -> dict[str, JsonValue]:
    """Evaluate an arithmetic expression exactly, for example "(12.5 * 4) / 3".

    Args:
        expression: Numbers, parentheses and the operators + - * / // % **.
    """
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression, mode="eval")
        value = _evaluate(tree.body)
    except SyntaxError as e:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from e
    except (DivisionByZero, InvalidOperation, ZeroDivisionError) as e:
        raise ToolError(f"cannot compute {expression!r}: {type(e).__name__}") from e
    return {"expression": expression, "result": str(value.normalize())}
