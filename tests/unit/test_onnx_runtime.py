"""The ONNX runtime on tiny graphs: providers, signatures, batching and splitting, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelyard.errors import ConfigError, ModelError, ValidationError
from modelyard.repository.manifest import Manifest
from modelyard.runtimes.onnx import (
    OnnxModel,
    OnnxSession,
    gpu_available,
    session_options,
)
from onnx import TensorProto, helper

from tests.support.onnx_models import affine_manifest, affine_model, save, string_identity_model

F32 = np.float32


def make_model(path: Path, manifest: dict[str, Any]) -> OnnxModel:
    model = OnnxModel(Manifest.model_validate(manifest), path)
    model.load()
    return model


@pytest.fixture
def affine(tmp_path: Path) -> OnnxModel:
    affine_model(tmp_path / "model.onnx")
    return make_model(tmp_path, affine_manifest())


def counting_runs(model: OnnxModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the leading dim of each session run."""
    rows: list[int] = []
    run = model.session.run

    def spy(feeds: Any, outputs: Any = ()) -> dict[str, Any]:
        rows.append(next(iter(feeds.values())).shape[0])
        return run(feeds, outputs)

    monkeypatch.setattr(model.session, "run", spy)
    return rows


def test_providers_follow_the_hardware(tmp_path: Path) -> None:
    session = OnnxSession(affine_model(tmp_path / "m.onnx"))
    expected = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu_available() else []
    assert session.providers == (expected or ["CPUExecutionProvider"])


def test_cpu_device_never_uses_cuda(tmp_path: Path) -> None:
    session = OnnxSession(affine_model(tmp_path / "m.onnx"), device="cpu")
    assert session.providers == ["CPUExecutionProvider"]


def test_session_options_do_not_spin() -> None:
    options = session_options(2)
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_session_reports_signature_and_metadata(tmp_path: Path) -> None:
    session = OnnxSession(affine_model(tmp_path / "m.onnx", a=3.0))
    assert [(s.name, s.datatype, s.shape) for s in session.input_specs()] == [
        ("x", "FP32", (-1, 3))
    ]
    assert [(s.name, s.datatype, s.shape) for s in session.output_specs()] == [
        ("y", "FP32", (-1, 3))
    ]
    assert session.metadata["a"] == "3.0"


def test_batch_runs_once_and_splits_by_leading_dim(
    affine: OnnxModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = counting_runs(affine, monkeypatch)
    xs = [np.full((n, 3), n, F32) for n in (2, 1, 3, 0)]
    outcomes = affine.predict([{"x": x} for x in xs])
    assert runs == [6]
    for x, outcome in zip(xs, outcomes, strict=True):
        assert isinstance(outcome, dict)
        np.testing.assert_allclose(outcome["y"], 2 * x + 1)


def test_empty_batch(affine: OnnxModel) -> None:
    assert affine.predict([]) == []


def test_requests_group_by_trailing_dims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "D"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "D"])],
    )
    save(graph, tmp_path / "model.onnx")
    manifest = affine_manifest()
    manifest["inputs"] = [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
    manifest["outputs"] = [{"name": "y", "datatype": "FP32", "shape": [-1, -1]}]
    model = make_model(tmp_path, manifest)
    runs = counting_runs(model, monkeypatch)
    xs = [np.ones((2, 3), F32), np.ones((1, 4), F32), np.ones((1, 3), F32)]
    outcomes = model.predict([{"x": x} for x in xs])
    assert sorted(runs) == [1, 3]
    for x, outcome in zip(xs, outcomes, strict=True):
        assert isinstance(outcome, dict)
        np.testing.assert_array_equal(outcome["y"], 2 * x)


def test_a_failing_request_fails_alone(affine: OnnxModel) -> None:
    good, bad = np.ones((1, 3), F32), np.ones((1, 4), F32)
    outcomes = affine.predict([{"x": good}, {"x": bad}, {"x": good}])
    assert isinstance(outcomes[1], ModelError)
    assert all(isinstance(outcomes[i], dict) for i in (0, 2))


def test_outputs_without_batch_axis_run_per_request(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)],
        "sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
    )
    save(graph, tmp_path / "model.onnx")
    manifest = affine_manifest()
    manifest["outputs"] = [{"name": "total", "datatype": "FP32", "shape": []}]
    model = make_model(tmp_path, manifest)
    outcomes = model.predict([{"x": np.ones((1, 3), F32)}, {"x": np.ones((2, 3), F32)}])
    assert [float(o["total"]) for o in outcomes if isinstance(o, dict)] == [3.0, 6.0]


def string_model(tmp_path: Path) -> OnnxModel:
    string_identity_model(tmp_path / "model.onnx")
    manifest = affine_manifest("ident")
    manifest["inputs"] = [{"name": "s", "datatype": "BYTES", "shape": [-1]}]
    manifest["outputs"] = [{"name": "t", "datatype": "BYTES", "shape": [-1]}]
    return make_model(tmp_path, manifest)


def bytes_tensor(*items: bytes) -> np.ndarray[Any, Any]:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


def test_strings_go_in_and_come_out_as_bytes(tmp_path: Path) -> None:
    model = string_model(tmp_path)
    words = [bytes_tensor(b"hello", "é".encode()), bytes_tensor(b"x")]
    outcomes = model.predict([{"s": w} for w in words])
    assert [o["t"].tolist() for o in outcomes if isinstance(o, dict)] == [
        [b"hello", "é".encode()],
        [b"x"],
    ]


def test_invalid_utf8_is_a_validation_error_for_that_request_only(tmp_path: Path) -> None:
    model = string_model(tmp_path)
    outcomes = model.predict([{"s": bytes_tensor(b"ok")}, {"s": bytes_tensor(b"\xff")}])
    assert isinstance(outcomes[0], dict)
    assert outcomes[0]["t"].tolist() == [b"ok"]
    assert isinstance(outcomes[1], ValidationError)


@pytest.mark.parametrize(
    ("field", "spec", "message"),
    [
        ("inputs", {"name": "x", "datatype": "FP64", "shape": [-1, 3]}, "FP64 in the manifest"),
        ("inputs", {"name": "z", "datatype": "FP32", "shape": [-1, 3]}, "'z' is not in the graph"),
        ("outputs", {"name": "y", "datatype": "INT64", "shape": [-1, 3]}, "FP32 in the graph"),
        ("outputs", {"name": "w", "datatype": "FP32", "shape": [-1, 3]}, "'w' is not in the graph"),
    ],
)
def test_manifest_must_match_the_graph(
    tmp_path: Path, field: str, spec: dict[str, Any], message: str
) -> None:
    affine_model(tmp_path / "model.onnx")
    manifest = {**affine_manifest(), field: [spec]}
    with pytest.raises(ConfigError, match=message):
        make_model(tmp_path, manifest)


def test_undeclared_graph_input_is_refused(tmp_path: Path) -> None:
    affine_model(tmp_path / "model.onnx")
    manifest = {**affine_manifest(), "inputs": []}
    with pytest.raises(ConfigError, match=r"graph input\(s\) \['x'\]"):
        make_model(tmp_path, manifest)


def test_missing_or_corrupt_model_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        make_model(tmp_path, affine_manifest())
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match="cannot load"):
        make_model(tmp_path, affine_manifest())


def test_device_parameter_is_checked(tmp_path: Path) -> None:
    affine_model(tmp_path / "model.onnx")
    with pytest.raises(ConfigError, match="device 'tpu'"):
        make_model(tmp_path, {**affine_manifest(), "parameters": {"device": "tpu"}})
    if not gpu_available():
        with pytest.raises(ConfigError, match="no usable CUDA"):
            make_model(tmp_path, {**affine_manifest(), "parameters": {"device": "cuda"}})


def test_session_from_bytes_runs_on_host_arrays(tmp_path: Path) -> None:
    session = OnnxSession(affine_model(tmp_path / "m.onnx").read_bytes(), device="cpu")
    (y,) = session.run({"x": np.zeros((2, 3), F32)}).values()
    np.testing.assert_allclose(y, np.ones((2, 3)))
    assert session.inference_session.get_inputs()[0].name == "x"


def test_io_binding_path(tmp_path: Path) -> None:
    """The CUDA path's IO binding logic, bound to host memory so it runs without a GPU."""
    session = OnnxSession(affine_model(tmp_path / "m.onnx"), device="cpu")
    session._bind_device = "cpu"
    (out,) = session.run({"x": np.zeros((2, 3), F32)}).values()
    np.testing.assert_allclose(out, np.ones((2, 3)))
