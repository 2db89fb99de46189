"""The condition language: what it evaluates, what it refuses and where it says the problem is."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from modelyard.graph.expressions import (
    EvaluationError,
    ExpressionError,
    compile_condition,
)
from modelyard.graph.values import normalize


def _bytes(*items: bytes) -> np.ndarray[Any, Any]:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


CONTEXT: dict[str, Any] = {
    "request": {"caller": "alice", "id": "r-1"},
    "langid": {"language": _bytes(b"de"), "probability": np.asarray([0.93], dtype=np.float32)},
    "translate": None,  # skipped
    "sentiment": {
        "label": _bytes(b"positive"),
        "scores": np.asarray([0.1, 0.2, 0.7], dtype=np.float32),
    },
    "tags": _bytes(b"a", b"b"),
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("langid.language != 'en'", True),
        ("langid.language == 'de'", True),
        ("langid.language in ['de', 'fr']", True),
        ("langid.language not in ('de',)", False),
        ("langid.probability > 0.9 and langid.probability <= 1", True),
        ("0.5 < langid.probability < 0.95", True),
        ("not langid.language == 'en'", True),
        ("request.caller == 'alice' or 1 / 0", True),  # short-circuit
        ("translate.status == 'translated'", False),  # skipped stage reads as None
        ("translate.status == None", True),
        ("sentiment.scores[2] > 0.5", True),
        ("sentiment.scores[-1] == sentiment.scores[2]", True),
        ("len(sentiment.scores) == 3", True),
        ("upper(langid.language) == 'DE'", True),
        ("lower('AbC') == 'abc'", True),
        ("int('7') + 1 == 8 and float(2) * 3 == 6.0 and 7 % 4 - 1 == 2", True),
        ("str(3) + 'x' == '3x'", True),
        ("'a' in tags", True),
        ("tags == ['a', 'b']", True),
        ("-1 + +2 == 1", True),
        ("'yes' if langid.language == 'de' else 'no'", True),
        ("None", False),
    ],
)
def test_valid_conditions(text: str, expected: bool) -> None:
    assert compile_condition(text).evaluate(CONTEXT) is expected


def test_value_and_references() -> None:
    condition = compile_condition("langid.language == 'en' or sentiment.scores[0] > x")
    assert condition.references == {("langid", "language"), ("sentiment", "scores"), ("x",)}
    assert compile_condition("upper(langid.language)").value(CONTEXT) == "DE"


def test_block_scalar_whitespace_is_accepted() -> None:
    assert compile_condition("  langid.language\n  == 'de'\n").evaluate(CONTEXT)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("__import__('os')", "call to '__import__' is not allowed", 1),
        ("langid.__class__", "name '__class__'", 1),
        ("_secret == 1", "name '_secret'", 1),
        ("open('x')", "call to 'open' is not allowed", 1),
        ("langid.language.upper()", "call to 'langid.language.upper'", 1),
        ("(lambda: 1)()", "call to", 1),
        ("x == (lambda: 1)", "Lambda is not allowed", 7),
        ("[c for c in 'ab']", "ListComp is not allowed", 1),
        ("{c: 1 for c in 'ab'}", "DictComp is not allowed", 1),
        ("'ab'[0] == 'a'", "reading from Constant", 1),
        ("len(x)[0]", "reading from Call", 1),
        ("(1).real", "reading from Constant", 2),
        ("x[1:2]", "subscript other than a constant", 3),
        ("x[y]", "subscript other than a constant", 3),
        ("x ** 2", "operator Pow is not allowed", 1),
        ("x is None", "comparison Is is not allowed", 1),
        ("f'{x}' == ''", "JoinedStr is not allowed", 1),
        ("(y := 1)", "NamedExpr is not allowed", 2),
        ("b'x' == x", "literal b'x' is not allowed", 1),
        ("len(x, key=1)", "keyword argument", 8),
        ("len(*x)", "Starred is not allowed", 5),
        ("{'a': 1}", "Dict is not allowed", 1),
        ("x == 1 and", "unexpected end of condition", 11),
        ("x ==== 2", "invalid syntax", 5),
        ("x = 1", "invalid syntax", 3),
    ],
)
def test_forbidden_constructs_name_construct_and_column(
    text: str, message: str, column: int
) -> None:
    with pytest.raises(ExpressionError, match=message) as info:
        compile_condition(text)
    assert info.value.column == column
    assert str(info.value).startswith(f"column {column}: ")


def test_overlong_condition_is_refused() -> None:
    with pytest.raises(ExpressionError, match="longer than"):
        compile_condition("x == 1 or " * 300 + "x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("langd.language == 'en'", r"unknown name 'langd' \(known: langid, request,"),
        ("langid.lang == 'en'", r"langid has no field 'lang' \(fields: language, probability\)"),
        ("langid.language.code", "cannot read field 'code' of a str"),
        ("langid.language < 3", "TypeError"),
        ("1 / 0", "ZeroDivisionError"),
        ("sentiment.scores[7]", "IndexError"),
        ("lower(langid.probability)", "lower\\(\\) takes a str"),
        ("'ab' * 100000 == ''", "longer than 10000"),
    ],
)
def test_evaluation_errors(text: str, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        compile_condition(text).evaluate(CONTEXT)


def test_evaluation_error_points_at_the_failing_operand() -> None:
    with pytest.raises(EvaluationError, match="column 13: ZeroDivisionError"):
        compile_condition("x == 1 and (1 / 0)").evaluate({"x": 1})


def test_normalization_rule() -> None:
    assert normalize(_bytes(b"en")) == "en"
    assert normalize(b"\xff") == "\ufffd"
    assert normalize(np.float32(0.5)) == 0.5
    assert isinstance(normalize(np.int64(3)), int)
    assert normalize(np.asarray([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert normalize(np.asarray(7)) == 7
    assert normalize("x") == "x"


@pytest.mark.parametrize(
    "text", ["+".join(["1"] * 150) + " == 1", "-" * 1900 + "1", "not " * 150 + "x"]
)
def test_deeply_nested_conditions_are_refused_when_compiled(text: str) -> None:
    # these once raised RecursionError from the checker instead of an ExpressionError
    with pytest.raises(ExpressionError, match="nested more than 100 levels"):
        compile_condition(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("str([[[0] * 10000] * 10000] * 10000) == ''", "result longer than 10000"),  # hung
        ("[[0] * 9999] * 2", "result longer than 10000"),  # nested values are counted
        ("'%999999999d' % 1 == ''", "string formatting"),  # a 1 GB string
        ("request.caller % 2", "string formatting"),
    ],
)
def test_conditions_cannot_build_huge_values(text: str, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        compile_condition(text).evaluate(CONTEXT)


def test_repeats_within_the_bound_and_modulo_on_numbers_still_work() -> None:
    assert compile_condition("[[0] * 100] * 99 == [[0] * 100] * 99").evaluate(CONTEXT)
    assert compile_condition("'ab' * 5000 == 'ab' * 5000 and 10 % 3 == 1").evaluate(CONTEXT)


def test_comparing_values_nested_too_deeply_is_an_evaluation_error() -> None:
    deep: list[Any] = []
    for _ in range(5000):  # a stage output as deep as msgpack lets a reply be, and more
        deep = [deep]
    with pytest.raises(EvaluationError, match="RecursionError"):
        compile_condition("x == y").evaluate({"x": deep, "y": [[deep]][0]})
