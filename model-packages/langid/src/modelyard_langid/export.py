"""Export langid.py's naive-Bayes model to one end-to-end ONNX graph.

langid.py scans the UTF-8 bytes of a text with a byte DFA, counts how often each DFA state is
entered, expands the state counts into n-gram feature counts and scores them with a naive-Bayes
model: ``logprob = features @ P + prior``. Since features are a linear map of state counts
(``features = counts @ O``), the graph takes the precomposed state->class matrix ``O @ P``:

``bytes [N,L] int64`` (zero-padded) + ``lengths [N]`` -> Scan (DFA, one byte per step, whole
batch at once) -> states [N,L] -> ScatterElements(add, masked by length) -> counts [N,S] ->
MatMul(O @ P) + prior -> Softmax -> ``prob [N,C]`` and ArgMax -> ``label [N]``.

Arithmetic after the DFA is float64, as langid's own numpy code is, so near-ties resolve the same
way. Class codes are in the model metadata under ``classes`` (comma-separated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["OPSET", "LangIdTables", "build_model", "export_bytes", "identifier", "load_tables"]

OPSET = 18
IR_VERSION = 10  # onnx writes a newer IR by default than onnxruntime 1.3x accepts


@dataclass(frozen=True)
class LangIdTables:
    """langid's model, rearranged for the graph."""

    nextmove: np.ndarray[Any, np.dtype[np.int16]]  # [S*256] DFA transitions
    state_class: np.ndarray[Any, np.dtype[np.float64]]  # [S, C] = O @ P
    prior: np.ndarray[Any, np.dtype[np.float64]]  # [C]
    classes: tuple[str, ...]


def identifier(languages: Sequence[str] | None = None) -> Any:
    """langid's ``LanguageIdentifier`` (optionally restricted), with normalised probabilities.

    Shared per language set: callers must not change it.
    """
    return _identifier(None if languages is None else tuple(sorted(languages)))


@cache  # decoding langid's model takes seconds; a build needs it several times
def _identifier(languages: tuple[str, ...] | None) -> Any:
    from langid import langid  # noqa: PLC0415  # heavy: only when a build asks

    ident = langid.LanguageIdentifier.from_modelstring(langid.model, norm_probs=True)
    if languages is not None:
        ident.set_languages(languages)
    return ident


def load_tables(languages: Sequence[str] | None = None) -> LangIdTables:
    """langid's tables, optionally restricted to ``languages`` (ISO 639-1 codes)."""
    ident = identifier(languages)
    nextmove = np.asarray(ident.tk_nextmove, dtype=np.int64)
    n_states = nextmove.size // 256
    if nextmove.max() >= np.iinfo(np.int16).max:
        raise ValueError(f"DFA has {n_states} states; int16 transitions do not fit")
    ptc = np.asarray(ident.nb_ptc, dtype=np.float64)
    return LangIdTables(
        nextmove=nextmove.astype(np.int16),
        state_class=_state_class(ident.tk_output, ptc, n_states),
        prior=np.asarray(ident.nb_pc, dtype=np.float64),
        classes=tuple(str(c) for c in ident.nb_classes),
    )


def _state_class(
    outputs: dict[int, Sequence[int]], ptc: np.ndarray[Any, Any], n_states: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``O @ P``: each state's row sums the class log-probs of the features it emits."""
    items = sorted((s, list(f)) for s, f in outputs.items() if f)
    rows = np.repeat([s for s, _ in items], [len(f) for _, f in items])
    cols = np.concatenate([f for _, f in items]).astype(np.int64)
    out = np.zeros((n_states, ptc.shape[1]), dtype=np.float64)
    np.add.at(out, rows, ptc[cols])
    return out


def _scan_body() -> onnx.GraphProto:
    """One DFA step for the whole batch: ``state = nextmove[state * 256 + byte]``."""
    nodes = [
        helper.make_node("Constant", [], ["c256"], value_int=256),
        helper.make_node("Mul", ["s_in", "c256"], ["s_base"]),
        helper.make_node("Add", ["s_base", "b_in"], ["s_idx"]),
        helper.make_node("Gather", ["nextmove", "s_idx"], ["s_next16"], axis=0),  # outer scope
        helper.make_node("Cast", ["s_next16"], ["s_out"], to=TensorProto.INT64),
        helper.make_node("Identity", ["s_out"], ["s_scan"]),
    ]
    vec = [None]
    return helper.make_graph(
        nodes,
        "dfa_step",
        [_info("s_in", TensorProto.INT64, vec), _info("b_in", TensorProto.INT64, vec)],
        [_info("s_out", TensorProto.INT64, vec), _info("s_scan", TensorProto.INT64, vec)],
    )


def _info(name: str, dtype: int, shape: Sequence[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _nodes() -> list[onnx.NodeProto]:
    """The main graph, from inputs to label/prob (see the module docstring)."""
    node = helper.make_node
    return [
        node("Shape", ["lengths"], ["n_shape"]),
        node("ConstantOfShape", ["n_shape"], ["state0"], value=_scalar(0, TensorProto.INT64)),
        node(
            "Scan",
            ["state0", "bytes"],
            ["state_last", "states"],
            body=_scan_body(),
            num_scan_inputs=1,
            scan_input_axes=[1],
            scan_output_axes=[1],
        ),
        node("Shape", ["bytes"], ["bytes_shape"]),
        node("Gather", ["bytes_shape", "one"], ["max_len"], axis=0),
        node("Range", ["zero", "max_len", "one"], ["positions"]),
        node("Unsqueeze", ["positions", "axis0"], ["positions_row"]),
        node("Unsqueeze", ["lengths", "axis1"], ["lengths_col"]),
        node("Less", ["positions_row", "lengths_col"], ["mask"]),
        node("Cast", ["mask"], ["updates"], to=TensorProto.DOUBLE),
        node("Concat", ["n_shape", "n_states"], ["counts_shape"], axis=0),
        node(
            "ConstantOfShape", ["counts_shape"], ["zeros"], value=_scalar(0.0, TensorProto.DOUBLE)
        ),
        node(
            "ScatterElements", ["zeros", "states", "updates"], ["counts"], axis=1, reduction="add"
        ),
        node("MatMul", ["counts", "state_class"], ["scores"]),
        node("Add", ["scores", "prior"], ["logprob"]),
        node("Softmax", ["logprob"], ["prob64"], axis=-1),
        node("Cast", ["prob64"], ["prob"], to=TensorProto.FLOAT),
        node("ArgMax", ["logprob"], ["label"], axis=1, keepdims=0),
    ]


def _scalar(value: float, dtype: int) -> onnx.TensorProto:
    return helper.make_tensor("value", dtype, [1], [value])


def _initializers(tables: LangIdTables) -> list[onnx.TensorProto]:
    arr = numpy_helper.from_array
    n_states = tables.state_class.shape[0]
    return [
        arr(tables.nextmove, "nextmove"),
        arr(tables.state_class, "state_class"),
        arr(tables.prior, "prior"),
        arr(np.array([n_states], dtype=np.int64), "n_states"),
        arr(np.array(0, dtype=np.int64), "zero"),
        arr(np.array(1, dtype=np.int64), "one"),
        arr(np.array([0], dtype=np.int64), "axis0"),
        arr(np.array([1], dtype=np.int64), "axis1"),
    ]


def build_model(tables: LangIdTables) -> onnx.ModelProto:
    """The end-to-end graph for ``tables``, checked by ``onnx.checker``."""
    n_classes = len(tables.classes)
    graph = helper.make_graph(
        _nodes(),
        "langid_e2e",
        [_info("bytes", TensorProto.INT64, ["N", "L"]), _info("lengths", TensorProto.INT64, ["N"])],
        [
            _info("label", TensorProto.INT64, ["N"]),
            _info("prob", TensorProto.FLOAT, ["N", n_classes]),
        ],
        initializer=_initializers(tables),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="modelyard-langid",
        ir_version=IR_VERSION,
    )
    helper.set_model_props(model, {"classes": ",".join(tables.classes), "source": "langid 1.1.6"})
    onnx.checker.check_model(model, full_check=True)
    return model


def export_bytes(languages: Sequence[str] | None = None) -> bytes:
    """The serialized graph; identical bytes on every run for the same languages."""
    return build_model(load_tables(languages)).SerializeToString(deterministic=True)
