"""Hypothesis strategies for the documents operators and services write: pipeline spec YAML
(with conditions), control records and audit records, each a valid sample with parts swapped
for hostile ones."""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from hypothesis import strategies as st

from tests.fuzz.samples import CONTROL_SAMPLE, HOP_SAMPLE, REQUEST_SAMPLE, SPEC_TEXT
from tests.fuzz.strategies import JUNK, hostile, jsonable, rare

__all__ = ["audit_values", "control_values", "spec_texts"]

# pipeline specs ------------------------------------------------------------------------
_YAML_SNIPPETS = [
    "&a [*a]", "!!python/object:os.system x", "2001-02-30", "!!binary '!!!'", "? [a]\n: 1",
    "? {[a]: 1}\n: 1", "\x00", "\x07", "[" * 500, "{" * 200, "1" * 5000, "!!set {a, b}",
    "!!omap [a: 1]", "*undefined", "&x a", "'\\ud800'", '"\\ud800"', "- a\n- b", "|\n  x",
    "0o777", "0x_", ".nan", "-.inf", "~", "null", "{a: 1, a: 2}", "!custom x", "%YAML 1.1\n---",
]  # fmt: skip
_CONDITIONS = [
    "a.y != 'en'", "len(a.y) > 0", "request.caller == 'x'", "str([[[0]*10000]*10000]*10000)",
    "'%999999999d' % 1 == ''", "1+" * 120 + "1", "-" * 300 + "1", "not " * 200 + "a.y",
    "a.y[0] == 'x'", "a.__class__", "(lambda: 1)()", "int('9' * 5000)", "float('nan') > 1",
    "a.y * 100000", "[a.y] * 10000", "request.text in request.text", "1/0", "b.z.w.v",
    "request.id % 2", "x if a.y else y", "a.y == a.y == a.y", "upper(1)", "len()", "a[-1]",
]  # fmt: skip


@st.composite
def spec_texts(draw: st.DrawFn) -> str:
    """Pipeline spec YAML: the fuzz spec with one subtree or condition swapped for another,
    or a YAML snippet spliced into its text."""
    data = yaml.safe_load(SPEC_TEXT)
    roll = draw(st.integers(0, 3))
    if roll == 0:
        text = SPEC_TEXT
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(_YAML_SNIPPETS) | st.text(max_size=8)) + text[at:]
    if roll == 1:
        stage = draw(st.sampled_from(sorted(data["stages"])))
        data["stages"][stage]["when"] = draw(st.sampled_from(_CONDITIONS) | _condition_texts())
    else:
        path = draw(st.sampled_from(_SPEC_PATHS))
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = draw(st.one_of(_SPEC_VALUES, JUNK.map(jsonable)))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=draw(st.booleans()))


_SPEC_PATHS = [
    ("pipeline",), ("version",), ("inputs",), ("inputs", "text"), ("inputs", "text", "datatype"),
    ("inputs", "text", "shape"), ("inputs", "scores", "optional"), ("stages",), ("stages", "a"),
    ("stages", "a", "model"), ("stages", "a", "inputs"), ("stages", "b", "inputs", "x"),
    ("stages", "c", "when"), ("outputs",), ("outputs", "y"), ("description",),
]  # fmt: skip
_SPEC_VALUES = st.sampled_from(
    [
        "request.text", "a.y", "b.z", ["a.y", "request.text"], [], {}, None, -1, 0, 2**70,
        "request", "A.y", "a.y.z", "c", "docs", "", {"datatype": "FP32", "shape": [-1]},
        {"datatype": "BYTES", "shape": [2**63]}, {"model": "m", "inputs": {"x": "c.w"}},
        ["d.y"], {"request": {"model": "m", "inputs": {"x": "request.text"}}},
    ]
)  # fmt: skip


@st.composite
def _condition_texts(draw: st.DrawFn) -> str:
    """Conditions from the language's own pieces (names, literals, operators, calls)."""
    atoms = st.sampled_from(
        ["a.y", "b.z", "request.text", "request.caller", "request.id", "'en'", "1", "2.5",
         "None", "True", "[1, 'x']", "(1, 2)", "a.y[0]", "request.scores[-1]", "''"]
    )  # fmt: skip
    ops = st.sampled_from([" == ", " != ", " < ", " in ", " not in ", " and ", " or ", " + ",
                           " - ", " * ", " / ", " % "])  # fmt: skip
    funcs = st.sampled_from(["len", "lower", "upper", "str", "int", "float"])
    parts = [draw(atoms)]
    for _ in range(draw(st.integers(0, 4))):
        roll = draw(st.integers(0, 3))
        if roll == 0:
            parts = [f"{draw(funcs)}({''.join(parts)})"]
        elif roll == 1:
            parts = ["not (", *parts, ")"]
        else:
            parts += [draw(ops), draw(atoms)]
    return "".join(parts)


# control and audit records ----------------------------------------------------------------
_CONTROL_SWAPS = [
    ("change",), ("change", "type"), ("change", "stage"), ("change", "version"),
    ("state",), ("state", "stages"), ("state", "stages", "a"), ("state", "stages", "a", "active"),
    ("state", "stages", "a", "canary"), ("state", "stages", "a", "canary", "weight"),
    ("state", "stages", "a", "guards"), ("state", "releases"), ("seq",), ("at",), ("key",),
    ("actor",), ("schema",), ("state", "seq"), ("state", "stages", "a", "previous"),
]  # fmt: skip
_RECORD_VALUES = st.sampled_from(
    [
        None, "", "x" * 1000, -1, 0, 2**70, 1.5, math.nan, math.inf, [], {}, ["1"], "../x",
        "2025-13-40T00:00:00Z", "2025-01-01T00:00:00", "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00", {"version": "2", "weight": math.inf},
        [{"metric": "error_rate", "max": math.inf}], {"type": "rollback", "stage": "a"},
        {"type": "canary", "stage": "a", "version": "2", "weight": math.nan}, "v 1", "\ud800",
    ]
)  # fmt: skip
_AUDIT_SWAPS = [
    ("latency_ms",), ("dispatched_at",), ("finished_at",), ("received_at",), ("kind",),
    ("role",), ("attempt",), ("served_by",), ("skipped",), ("request_id",), ("schema",),
    ("shadow",), ("error",), ("outcome",), ("spec_version",), ("caller",), ("trace_id",),
]  # fmt: skip


@st.composite
def _swapped(draw: st.DrawFn, sample: dict[str, Any], paths: list[tuple[str, ...]]) -> bytes:
    data = json.loads(json.dumps(sample))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(paths))
        node = data
        for key in path[:-1]:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            if isinstance(node, dict):
                if rare(draw, 10):
                    node.pop(path[-1], None)
                else:
                    node[path[-1]] = draw(st.one_of(_RECORD_VALUES, JUNK.map(jsonable)))
    kind = hostile(draw, 2, 20)
    if kind == 0:
        return b"[" * 50_000
    if kind == 1:
        return draw(st.binary(max_size=32))
    return json.dumps(data, default=repr).encode("utf-8", "surrogatepass")


def control_values() -> st.SearchStrategy[bytes]:
    """Control-topic values: a valid record with up to three parts swapped for wrong ones."""
    return _swapped(CONTROL_SAMPLE, _CONTROL_SWAPS)


def audit_values() -> st.SearchStrategy[bytes]:
    """Audit-topic values: a hop or request record with up to three parts swapped."""
    return st.sampled_from([HOP_SAMPLE, REQUEST_SAMPLE]).flatmap(
        lambda sample: _swapped(sample, _AUDIT_SWAPS)
    )
