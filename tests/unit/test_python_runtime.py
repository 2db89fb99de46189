"""Entrypoint loading, runtime selection, and the built-in Echo and Noop models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelyard import runtimes
from modelyard.errors import ConfigError
from modelyard.model import Model
from modelyard.repository.manifest import Manifest
from modelyard.runtimes import create_model
from modelyard.runtimes.builtin import Echo, Noop
from modelyard.runtimes.python import load_entrypoint


def manifest(**fields: Any) -> Manifest:
    base: dict[str, Any] = {
        "name": "m",
        "version": "1",
        "runtime": "python",
        "entrypoint": "modelyard.runtimes.builtin:Echo",
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [-1]},
            {"name": "b", "datatype": "BYTES", "shape": [-1], "optional": True},
        ],
        "outputs": [
            {"name": "a_out", "datatype": "FP32", "shape": [-1]},
            {"name": "b_out", "datatype": "BYTES", "shape": [-1, 2]},
        ],
    }
    return Manifest.model_validate({**base, **fields})


def test_load_entrypoint() -> None:
    assert load_entrypoint("modelyard.runtimes.builtin:Noop") is Noop


@pytest.mark.parametrize(
    ("entrypoint", "message"),
    [
        ("no_colon", "expected 'package.module:Class'"),
        ("a:b:c", "expected 'package.module:Class'"),
        (":Echo", "expected 'package.module:Class'"),
        ("modelyard_no_such_module:Thing", "cannot import 'modelyard_no_such_module'"),
        ("modelyard.runtimes.builtin:Nope", "has no 'Nope'"),
        ("modelyard.errors:ConfigError", "not a modelyard Model subclass"),
        ("modelyard.errors:POLICY", "not a modelyard Model subclass"),
        ("modelyard.model:Model", "Model is abstract"),
    ],
)
def test_bad_entrypoints(entrypoint: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_entrypoint(entrypoint)


def test_create_model_uses_the_entrypoint(tmp_path: Path) -> None:
    model = create_model(manifest(entrypoint="modelyard.runtimes.builtin:Noop"), tmp_path)
    assert isinstance(model, Noop)
    assert model.path == tmp_path


def test_python_runtime_needs_an_entrypoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs an entrypoint"):
        create_model(manifest(entrypoint=None), tmp_path)


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ("onnx", "modelyard.runtimes.onnx:OnnxModel"),
        ("subprocess", "modelyard.runtimes.subprocess:SubprocessModel"),
    ],
)
def test_runtimes_have_generic_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: str, expected: str
) -> None:
    asked: list[str] = []

    def fake(entrypoint: str) -> type[Model]:
        asked.append(entrypoint)
        return Noop

    monkeypatch.setattr(runtimes, "load_entrypoint", fake)
    create_model(manifest(runtime=runtime, entrypoint=None), tmp_path)
    assert asked == [expected]


def test_echo_renames_inputs_in_order(tmp_path: Path) -> None:
    model = Echo(manifest(), tmp_path)
    model.load()
    a = np.arange(3, dtype=np.float32)
    b = np.array([b"x", b"y"], dtype=object)
    assert model.predict([{"a": a, "b": b}, {"a": a}]) == [{"a_out": a, "b_out": b}, {"a_out": a}]


def test_echo_needs_matching_outputs(tmp_path: Path) -> None:
    outputs = [{"name": "a_out", "datatype": "FP32", "shape": [-1]}]
    with pytest.raises(ConfigError, match="one to one by datatype"):
        Echo(manifest(outputs=outputs), tmp_path).load()


def test_noop_returns_tiny_constant_outputs(tmp_path: Path) -> None:
    model = Noop(manifest(entrypoint="modelyard.runtimes.builtin:Noop"), tmp_path)
    model.load()
    first, second = model.predict([{"a": np.ones(5, np.float32)}, {}])
    assert isinstance(first, dict)
    assert first == second
    np.testing.assert_array_equal(first["a_out"], np.zeros(1, np.float32))
    assert first["a_out"].dtype == np.float32
    assert first["b_out"].tolist() == [[b"", b""]]
    assert not first["a_out"].flags.writeable
