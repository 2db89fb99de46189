"""Evaluation of a checked condition tree (see :mod:`modelyard.graph.expressions`).

Only node types the compiler let through reach here; anything else is a bug, not user input.
Every operand failure (wrong types, division by zero, a missing field) becomes an
``EvaluationError`` that quotes the condition and the column.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from modelyard.graph._grammar import (
    BINOPS,
    CMPOPS,
    FUNCTIONS,
    MAX_SEQUENCE,
    UNARY,
    EvaluationError,
)
from modelyard.graph.values import normalize

__all__ = ["evaluate"]


class _Eval:
    def __init__(self, context: Mapping[str, Any], text: str) -> None:
        self.context = context
        self.text = text

    def fail(self, node: ast.expr, message: str) -> EvaluationError:
        return EvaluationError(f"condition {self.text!r}, column {node.col_offset + 1}: {message}")

    def node(self, node: ast.expr) -> Any:
        """The value of ``node``; an operand failure is reported at the innermost node."""
        try:
            return self.dispatch(node)
        except EvaluationError:
            raise
        except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
            # RecursionError: comparing or printing a value nested ~1000 deep (a stage's reply)
            raise self.fail(node, f"{type(exc).__name__}: {exc}") from None

    def dispatch(self, node: ast.expr) -> Any:  # noqa: PLR0911 - one branch per node type
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Attribute):
            return self.field(node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.BoolOp):
            return self.boolop(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.UnaryOp):
            return UNARY[type(node.op)](self.node(node.operand))
        if isinstance(node, ast.IfExp):
            return self.node(node.body if self.node(node.test) else node.orelse)
        if isinstance(node, ast.List | ast.Tuple):
            return [self.node(e) for e in node.elts]
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(node, f"unchecked node {type(node).__name__}")  # pragma: no cover

    def name(self, node: ast.Name) -> Any:
        if node.id not in self.context:
            known = ", ".join(sorted(self.context)) or "none"
            raise self.fail(node, f"unknown name {node.id!r} (known: {known})")
        return normalize(self.context[node.id])

    def field(self, node: ast.Attribute) -> Any:
        base = self.node(node.value)
        if base is None:  # a skipped stage: every field of it reads as None
            return None
        if not isinstance(base, Mapping):
            raise self.fail(node, f"cannot read field {node.attr!r} of a {type(base).__name__}")
        if node.attr not in base:
            known = ", ".join(sorted(map(str, base))) or "none"
            raise self.fail(
                node, f"{ast.unparse(node.value)!s} has no field {node.attr!r} (fields: {known})"
            )
        return normalize(base[node.attr])

    def subscript(self, node: ast.Subscript) -> Any:
        base = self.node(node.value)
        if base is None:
            return None
        index = self.node(node.slice)
        if not isinstance(base, Mapping | list | str):
            raise self.fail(node, f"cannot index a {type(base).__name__}")
        return normalize(base[index])

    def boolop(self, node: ast.BoolOp) -> Any:
        is_and = isinstance(node.op, ast.And)
        value: Any = None
        for operand in node.values:  # short-circuit, with Python's value semantics
            value = self.node(operand)
            if bool(value) is not is_and:
                return value
        return value

    def compare(self, node: ast.Compare) -> bool:
        left = self.node(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.node(comparator)
            if not CMPOPS[type(op)](left, right):
                return False
            left = right
        return True

    def binop(self, node: ast.BinOp) -> Any:
        left, right = self.node(node.left), self.node(node.right)
        if isinstance(node.op, ast.Mult):
            self.check_repeat(node, left, right)
        elif isinstance(node.op, ast.Mod) and isinstance(left, str):
            # str % x is printf formatting, not arithmetic: '%999999999d' % 1 is a 1 GB string
            raise self.fail(node, "% on a str (string formatting) is not supported")
        return BINOPS[type(node.op)](left, right)

    def check_repeat(self, node: ast.BinOp, left: Any, right: Any) -> None:
        for seq, count in ((left, right), (right, left)):
            repeats = isinstance(seq, str | list) and isinstance(count, int)
            if repeats and count > 0 and _size(seq, MAX_SEQUENCE // count) * count > MAX_SEQUENCE:
                raise self.fail(node, f"result longer than {MAX_SEQUENCE}")

    def call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)  # the compiler allows only whitelisted names
        return FUNCTIONS[node.func.id](*(self.node(a) for a in node.args))


def _size(value: str | list[Any], limit: int) -> int:
    """Characters and list items in ``value``, nested lists counted in full (``[[0] * 9999] * 9``
    holds 90,000 values, not 9); the walk stops once the count passes ``limit``."""
    size, pending = 0, [value]
    while pending and size <= limit:
        item = pending.pop()
        size += len(item)
        if isinstance(item, list):
            pending.extend(v for v in item if isinstance(v, list | str))
    return size


def evaluate(tree: ast.expr, context: Mapping[str, Any], text: str) -> Any:
    """The value of the checked expression ``tree`` in ``context``."""
    return _Eval(context, text).node(tree)
