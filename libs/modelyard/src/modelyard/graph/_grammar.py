"""The grammar tables and errors shared by the condition compiler and its evaluator."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

from modelyard.errors import ConfigError, PoisonError

__all__ = [
    "BINOPS",
    "CMPOPS",
    "FUNCTIONS",
    "LITERALS",
    "MAX_DEPTH",
    "MAX_SEQUENCE",
    "MAX_TEXT",
    "UNARY",
    "EvaluationError",
    "ExpressionError",
]

MAX_TEXT = 2000  # conditions are one-liners; a cap also bounds parser recursion
MAX_DEPTH = 100  # nesting of the parsed tree: the checker and the evaluator recurse per level
MAX_SEQUENCE = 10_000  # most values `*` may build, nested ones counted: no 'a' * 10**9 bombs


class ExpressionError(ConfigError):
    """A condition is not valid in the language (raised at compile time, with its column)."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.column = column


class EvaluationError(PoisonError):
    """A valid condition could not be evaluated on this request's values."""


def _lower(value: Any) -> str:
    return _need_str(value, "lower").lower()


def _upper(value: Any) -> str:
    return _need_str(value, "upper").upper()


def _need_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}() takes a str, got {type(value).__name__}")
    return value


FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "len": len,
    "lower": _lower,
    "upper": _upper,
    "str": str,
    "int": int,
    "float": float,
}
BINOPS: Mapping[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
CMPOPS: Mapping[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
UNARY: Mapping[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
LITERALS = (str, int, float, bool, type(None))
