"""The ONNX runtime: one onnxruntime session per model version, CUDA when a GPU is really there.

``OnnxSession`` wraps an ``InferenceSession`` (provider choice, thread settings, IO binding on
CUDA); ``OnnxModel`` is the generic ``Model`` for manifests with runtime ``onnx`` and no
entrypoint. It batches a whole micro-batch into one ``run`` per group of requests whose inputs
agree on everything but the leading (batch) dimension, and splits the outputs back.

Manifest ``parameters``: ``model`` (the .onnx file, default ``model.onnx``), ``device``
(``auto``/``cpu``/``cuda``, default ``auto``), ``intra_op_threads`` (default 1).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelyard.errors import ConfigError, ModelError, ModelyardError, ValidationError
from modelyard.model import Inputs, Model, Outcome, Outputs
from modelyard.tensors import TensorSpec

__all__ = ["OnnxModel", "OnnxSession", "gpu_available", "session_options"]

Array = np.ndarray[Any, Any]
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
_DEVICES = ("auto", "cpu", "cuda")
_STRING = "tensor(string)"

# onnxruntime's graph type names -> OIP datatypes; anything else (maps, sequences) is kept as is
_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


@functools.cache
def gpu_available() -> bool:
    """Whether a CUDA device exists and this onnxruntime build can use it.

    The driver is asked first, through ctypes, because asking onnxruntime for the CUDA provider
    on a machine without one logs errors (missing libcublas) before it falls back to the CPU.
    """
    if _cuda_device_count() < 1 or CUDA not in ort.get_available_providers():
        return False
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21: CUDA/cuDNN wheels
    if preload is not None:
        preload()
    return True


def _cuda_device_count() -> int:
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0  # no NVIDIA driver installed
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Options for sessions on small shared boxes: few threads, no spin-waiting, warnings only."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 2  # warning
    # idle ORT workers otherwise spin and steal the other core from numpy and Python work
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OnnxSession:
    """One ``InferenceSession`` with OIP-typed signatures and host-in, host-out ``run``."""

    def __init__(
        self, model: Path | bytes, *, device: str = "auto", intra_op_threads: int = 1
    ) -> None:
        """Load ``model`` (a file, or serialized bytes); unloadable models are a ConfigError."""
        self.label = model.name if isinstance(model, Path) else "<in-memory model>"
        providers = [CUDA, CPU] if _use_cuda(device) else [CPU]
        source = str(model) if isinstance(model, Path) else model
        try:
            self._session = ort.InferenceSession(
                source, sess_options=session_options(intra_op_threads), providers=providers
            )
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise ConfigError(f"{self.label}: onnxruntime cannot load the model: {exc}") from exc
        # the CUDA provider may still have failed to start: trust what the session reports
        self.providers: list[str] = list(self._session.get_providers())
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        self._str_in = {a.name for a in self._session.get_inputs() if a.type == _STRING}
        self._str_out = {a.name for a in self._session.get_outputs() if a.type == _STRING}
        # where IO binding keeps tensors; None runs host-fed, as the CPU provider wants and as
        # string tensors need (onnxruntime binds only non-string tensors)
        binds = CUDA in self.providers and not (self._str_in or self._str_out)
        self._bind_device: str | None = "cuda" if binds else None

    def input_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(_spec(arg) for arg in self._session.get_inputs())

    def output_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(_spec(arg) for arg in self._session.get_outputs())

    def run(self, feeds: Mapping[str, Array], outputs: Sequence[str] = ()) -> dict[str, Array]:
        """Run once; ``outputs`` (default: all) come back as host numpy arrays, strings as bytes."""
        names = list(outputs) or [o.name for o in self._session.get_outputs()]
        host = {k: _to_ort(v) if k in self._str_in else v for k, v in feeds.items()}
        try:
            values = (
                self._run_bound(host, names, self._bind_device)
                if self._bind_device
                else self._run(host, names)
            )
        except Exception as exc:
            raise ModelError(f"{self.label}: onnxruntime failed: {exc}") from exc
        return {
            n: _from_ort(v) if n in self._str_out else v for n, v in zip(names, values, strict=True)
        }

    def _run(self, feeds: dict[str, Array], names: list[str]) -> list[Array]:
        return list(self._session.run(names, feeds))

    def _run_bound(self, feeds: dict[str, Array], names: list[str], device: str) -> list[Array]:
        """CUDA path: copy inputs to the device once, keep outputs there, copy them out at the end.

        Host-fed runs spend about half an image model's time at large batch on copies; binding
        doubled detection throughput on an H100 (MODELS.md section 5).
        """
        binding = self._session.io_binding()
        # held until the run ends: an OrtValue on host memory does not own the numpy buffer
        values = {
            k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), device, 0)
            for k, v in feeds.items()
        }
        for name, value in values.items():
            binding.bind_ortvalue_input(name, value)
        for name in names:
            binding.bind_output(name, device)
        self._session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    @property
    def inference_session(self) -> Any:
        """The wrapped ``onnxruntime.InferenceSession``, for what this class does not cover."""
        return self._session


def _use_cuda(device: str) -> bool:
    if device not in _DEVICES:
        raise ConfigError(f"device {device!r}: expected one of {list(_DEVICES)}")
    if device == "cuda" and not gpu_available():
        raise ConfigError("device 'cuda' asked for, but no usable CUDA GPU/onnxruntime-gpu found")
    return device != "cpu" and gpu_available()


def _spec(arg: Any) -> TensorSpec:
    dims = arg.shape if isinstance(arg.shape, list) else []
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)
    return TensorSpec(name=arg.name, datatype=_ORT_TYPES.get(arg.type, arg.type), shape=shape)


def _to_ort(array: Array) -> Array:
    """BYTES (object array of bytes) -> the str array onnxruntime wants (it would str() bytes)."""
    try:
        return np.vectorize(_decode, otypes=[object])(array) if array.size else array
    except UnicodeDecodeError as exc:
        raise ValidationError(f"string input is not valid UTF-8: {exc}") from exc


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_ort(array: Array) -> Array:
    out = np.empty(array.shape, dtype=object)
    out.reshape(-1)[:] = [str(v).encode() for v in array.reshape(-1).tolist()]
    return out


class OnnxModel(Model):
    """The generic ONNX model: manifest inputs/outputs are graph inputs/outputs, batch axis 0."""

    _session: OnnxSession

    def load(self) -> None:
        params = self.manifest.parameters
        file = self.path / str(params.get("model", "model.onnx"))
        if not file.is_file():
            raise ConfigError(f"{self.manifest.ref}: model file {file} does not exist")
        session = OnnxSession(
            file,
            device=str(params.get("device", "auto")),
            intra_op_threads=int(params.get("intra_op_threads", 1)),
        )
        _check_signature(self.manifest.ref, "input", self.manifest.inputs, session.input_specs())
        _check_signature(self.manifest.ref, "output", self.manifest.outputs, session.output_specs())
        self._session = session
        self._outputs = [o.name for o in self.manifest.outputs]

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        results: list[Outcome] = [ModelError("not run")] * len(batch)
        for indices in _groups(batch).values():
            for i, outcome in zip(
                indices, self._predict_group([batch[i] for i in indices]), strict=True
            ):
                results[i] = outcome
        return results

    def _predict_group(self, group: list[Inputs]) -> list[Outcome]:
        """One run for the group; if it fails or its outputs do not split, one run per request."""
        if len(group) > 1:
            try:
                return _split(self._run(_concat(group)), [_rows(r) for r in group])
            except ModelyardError:
                pass  # find the request at fault, and serve the others
        outcomes: list[Outcome] = []
        for request in group:
            try:
                outcomes.append(self._run(request))
            except ModelyardError as exc:
                outcomes.append(exc)
        return outcomes

    def _run(self, feeds: Inputs) -> Outputs:
        return self._session.run(feeds, self._outputs)

    @property
    def session(self) -> OnnxSession:
        return self._session


def _check_signature(
    ref: str, kind: str, declared: Sequence[TensorSpec], graph: Sequence[TensorSpec]
) -> None:
    by_name = {s.name: s for s in graph}
    for spec in declared:
        found = by_name.get(spec.name)
        if found is None:
            raise ConfigError(f"{ref}: {kind} {spec.name!r} is not in the graph {sorted(by_name)}")
        if found.datatype != spec.datatype:
            raise ConfigError(
                f"{ref}: {kind} {spec.name!r} is {spec.datatype} in the manifest, "
                f"{found.datatype} in the graph"
            )
    missing = sorted(set(by_name) - {s.name for s in declared}) if kind == "input" else []
    if missing:
        raise ConfigError(f"{ref}: graph input(s) {missing} are not declared in the manifest")


def _groups(batch: Sequence[Inputs]) -> dict[Any, list[int]]:
    """Request indices by what must agree for concatenation: names, dtypes, trailing dims."""
    groups: dict[Any, list[int]] = {}
    for i, request in enumerate(batch):
        key: Any = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in request.items()))
        if _rows(request) is None:
            key = i  # no common batch axis: runs alone
        groups.setdefault(key, []).append(i)
    return groups


def _rows(request: Inputs) -> int | None:
    """The request's leading dimension if every input has one and they agree, else None."""
    leading = {v.shape[0] if v.ndim else None for v in request.values()}
    return leading.pop() if len(leading) == 1 else None


def _concat(group: list[Inputs]) -> dict[str, Array]:
    return {name: np.concatenate([r[name] for r in group]) for name in group[0]}


def _split(outputs: Outputs, rows: list[int | None]) -> list[Outcome]:
    counts = [r or 0 for r in rows]
    bounds = np.cumsum(counts)[:-1]
    if any(v.ndim == 0 or v.shape[0] != sum(counts) for v in outputs.values()):
        raise ModelError("outputs do not share the inputs' batch axis")
    parts = {k: np.split(v, bounds) for k, v in outputs.items()}
    return [{k: parts[k][i] for k in outputs} for i in range(len(rows))]
