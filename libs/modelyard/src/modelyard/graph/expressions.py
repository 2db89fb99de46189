"""A small, safe expression language for branch conditions in pipeline specs.

``compile_condition(text)`` parses ``text`` once with :mod:`ast` (``mode="eval"``) and checks every
node against an explicit whitelist, so a bad condition fails when the spec is loaded, with the
offending construct and its 1-based column. Nothing is ever handed to ``eval``/``exec``:
:meth:`Condition.evaluate` walks the checked tree itself.

The language:

- literals: ``'str'``, ``1``, ``2.5``, ``True``/``False``/``None``, lists and tuples of literals;
- names from the context, with dotted access into mappings (``langid.language``,
  ``request.caller``) and constant subscripts on them (``sentiment.scores[2]``); a name whose
  value is ``None`` (a skipped stage) reads every field as ``None``;
- ``== != < <= > >= in not in`` (chains allowed), ``and or not``, ``+ - * / %``, unary ``- +``,
  ``a if cond else b``;
- the functions ``len lower upper str int float``.

Values read from the context are normalised by :func:`modelyard.graph.values.normalize`
(UTF-8 bytes read as ``str``, one-element arrays as their element), so ``langid.language != 'en'``
works on a ``BYTES [1]`` tensor. Attribute access on values, other calls, lambdas,
comprehensions, subscripts of anything but a context value, ``**``, f-strings and so on are refused.

Bounds, so a condition can neither crash nor exhaust the router: at most ``MAX_TEXT`` characters
nested at most ``MAX_DEPTH`` levels (refused at compile time); ``*`` builds at most
``MAX_SEQUENCE`` values, nested lists counted in full; ``%`` is arithmetic only (``str % x``,
printf formatting, is refused: ``'%999999999d' % 1`` is a gigabyte).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard.graph._evaluate import evaluate
from modelyard.graph._grammar import (
    BINOPS,
    CMPOPS,
    FUNCTIONS,
    LITERALS,
    MAX_DEPTH,
    MAX_TEXT,
    UNARY,
    EvaluationError,
    ExpressionError,
)

__all__ = [
    "FUNCTIONS",
    "Condition",
    "EvaluationError",
    "ExpressionError",
    "compile_condition",
]


def _col(node: ast.AST) -> int:
    return getattr(node, "col_offset", 0) + 1


def _refuse(node: ast.AST, what: str) -> ExpressionError:
    return ExpressionError(f"{what} is not allowed", _col(node))


def _check(node: ast.AST, refs: set[tuple[str, ...]]) -> None:
    """Raise ExpressionError unless ``node`` and its children are in the whitelist."""
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, LITERALS):
            raise _refuse(node, f"literal {node.value!r}")
    elif isinstance(node, ast.Name | ast.Attribute | ast.Subscript):
        _check_reference(node, refs)
    elif isinstance(node, ast.Call):
        _check_call(node, refs)
    elif isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
        _check_all([node.left, node.right], refs)
    elif isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        _check(node.operand, refs)
    elif isinstance(node, ast.Compare) and all(type(op) in CMPOPS for op in node.ops):
        _check_all([node.left, *node.comparators], refs)
    elif isinstance(node, ast.BoolOp):
        _check_all(node.values, refs)
    elif isinstance(node, ast.IfExp):
        _check_all([node.test, node.body, node.orelse], refs)
    elif isinstance(node, ast.List | ast.Tuple):
        _check_all(node.elts, refs)
    else:
        raise _refuse(node, _describe(node))


def _check_depth(root: ast.AST) -> None:
    """Refuse trees nested deeper than MAX_DEPTH (``1+1+...+1`` nests once per ``+``), before
    anything recurses over them; walked without recursion."""
    pending = [(root, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError(f"nested more than {MAX_DEPTH} levels deep", _col(node))
        pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check_all(nodes: list[ast.expr], refs: set[tuple[str, ...]]) -> None:
    for child in nodes:
        _check(child, refs)


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return f"operator {type(node.op).__name__}"
    if isinstance(node, ast.Compare):
        return f"comparison {'/'.join(type(op).__name__ for op in node.ops)}"
    return type(node).__name__  # Lambda, ListComp, JoinedStr, Starred, NamedExpr, ...


def _check_reference(node: ast.expr, refs: set[tuple[str, ...]]) -> None:
    """A context reference: a name, then fields (``a.b``) and constant subscripts (``a[0]``)."""
    if isinstance(node, ast.Subscript):
        _check_index(node)
        _check_reference(node.value, refs)
        return
    path: list[str] = []
    while isinstance(node, ast.Attribute):
        _check_identifier(node.attr, node)
        path.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise _refuse(node, f"reading from {_describe(node)} (only context names can be read)")
    _check_identifier(node.id, node)
    refs.add((node.id, *path))


def _check_index(node: ast.Subscript) -> None:
    index = node.slice
    if isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub):
        index = index.operand  # a negative index: x[-1]
    if not (isinstance(index, ast.Constant) and type(index.value) in (int, str)):
        raise _refuse(node.slice, "a subscript other than a constant int or str")


def _check_identifier(name: str, node: ast.AST) -> None:
    if name.startswith("_"):  # no dunders, no private fields: nothing reaches Python internals
        raise _refuse(node, f"name {name!r} (names starting with '_')")


def _check_call(node: ast.Call, refs: set[tuple[str, ...]]) -> None:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        allowed = ", ".join(FUNCTIONS)
        message = f"call to {ast.unparse(node.func)!r} is not allowed (functions: {allowed})"
        raise ExpressionError(message, _col(node))
    if node.keywords:
        raise _refuse(node.keywords[0], "a keyword argument")
    _check_all(node.args, refs)


@dataclass(frozen=True)
class Condition:
    """A compiled, checked condition; evaluate it against a context mapping."""

    text: str
    tree: ast.Expression = field(repr=False, compare=False)
    references: frozenset[tuple[str, ...]] = field(compare=False)

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """The truth of the condition; EvaluationError for missing names or bad operands."""
        return bool(self.value(context))

    def value(self, context: Mapping[str, Any]) -> Any:
        """The (normalised) value of the expression."""
        return evaluate(self.tree.body, context, self.text)


def _syntax_error(exc: SyntaxError, text: str) -> ExpressionError:
    if not exc.offset:  # CPython reports offset 0 when the input ended too early
        return ExpressionError("invalid syntax: unexpected end of condition", len(text) + 1)
    return ExpressionError(f"invalid syntax: {exc.msg}", exc.offset)


def compile_condition(text: str) -> Condition:
    """Parse and check ``text``; ExpressionError names the offending construct and column."""
    if len(text) > MAX_TEXT:
        raise ExpressionError(f"condition longer than {MAX_TEXT} characters", 1)
    text = text.strip().replace("\n", " ")  # YAML block scalars may wrap; eval wants one line
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise _syntax_error(exc, text) from None
    except (ValueError, RecursionError, MemoryError):  # a NUL; the parser's own nesting limits
        raise ExpressionError("invalid syntax: not a parsable expression", 1) from None
    _check_depth(tree.body)
    refs: set[tuple[str, ...]] = set()
    _check(tree.body, refs)
    return Condition(text=text, tree=tree, references=frozenset(refs))
