"""Tiny ONNX models built with ``onnx.helper``, and model versions that serve them.

onnxruntime refuses the IR version that recent ``onnx`` releases write by default, so every
model here pins ``ir_version`` and an opset it supports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from modelyard.repository.build import BuildContext
from modelyard.repository.manifest import Manifest
from onnx import TensorProto, helper

__all__ = [
    "IR_VERSION",
    "OPSET",
    "affine_manifest",
    "affine_model",
    "save",
    "string_identity_model",
    "write_affine_version",
]

IR_VERSION = 10
OPSET = 21


def save(graph: onnx.GraphProto, path: Path, **metadata: str) -> Path:
    """Write ``graph`` as a model onnxruntime accepts, with ``metadata`` as metadata_props."""
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def affine_model(path: Path, a: float = 2.0, b: float = 1.0) -> Path:
    """``y = a * x + b`` on FP32 ``x`` of shape [N, 3] (N free); returns ``path``."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Add", ["ax", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            helper.make_tensor("a", TensorProto.FLOAT, [], [a]),
            helper.make_tensor("b", TensorProto.FLOAT, [], [b]),
        ],
    )
    return save(graph, path, kind="affine", a=str(a), b=str(b))


def string_identity_model(path: Path) -> Path:
    """``t = s`` on a 1-D string tensor ``s`` of shape [N]; returns ``path``."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"])],
        "string_identity",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, ["N"])],
    )
    return save(graph, path)


def affine_manifest(name: str = "affine", version: str = "1") -> dict[str, Any]:
    """The manifest fields (all but artifacts) of an affine model version."""
    return {
        "name": name,
        "version": version,
        "runtime": "onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
        "batching": {"max_batch_size": 16, "max_wait_ms": 1},
        "parameters": {"model": "model.onnx"},
        "provenance": [
            {
                "source": "generated",
                "package": "tests.support.onnx_models",
                "version": "0",
                "license": "Apache-2.0",
            }
        ],
    }


def write_affine_version(
    root: Path, name: str = "affine", version: str = "1", *, a: float = 2.0, b: float = 1.0
) -> Manifest:
    """Write ``<root>/<name>/<version>/`` serving ``y = a * x + b`` through the ONNX runtime."""
    ctx = BuildContext(root=root, cache=root / ".cache")
    model = affine_model(ctx.scratch(f"{name}-{version}") / "model.onnx", a, b)
    return ctx.write_version(affine_manifest(name, version), {"model.onnx": model})
