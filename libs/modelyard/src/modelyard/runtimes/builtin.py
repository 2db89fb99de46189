"""Built-in Python models for tests, demos and benchmarks; both cost next to nothing per request.

Use them from a manifest with runtime ``python`` and entrypoint ``modelyard.runtimes.builtin:Echo``
or ``modelyard.runtimes.builtin:Noop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modelyard.errors import ConfigError
from modelyard.model import Inputs, Model, Outcome, Outputs
from modelyard.tensors import TensorSpec, numpy_dtype

__all__ = ["Echo", "Noop"]


class Echo(Model):
    """Returns each input unchanged under the name of the output at the same position.

    The manifest must declare as many outputs as inputs, with the same datatypes, in the same
    order (input i -> output i). An optional input a request omits is omitted from its outputs.
    """

    def load(self) -> None:
        inputs, outputs = self.manifest.inputs, self.manifest.outputs
        if [s.datatype for s in inputs] != [s.datatype for s in outputs]:
            raise ConfigError(
                f"{self.manifest.ref}: Echo needs outputs matching inputs one to one by datatype; "
                f"inputs {_sig(inputs)}, outputs {_sig(outputs)}"
            )
        self._names = {i.name: o.name for i, o in zip(inputs, outputs, strict=True)}

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        return [{self._names[k]: v for k, v in request.items()} for request in batch]


class Noop(Model):
    """Ignores its inputs and returns the same tiny constant outputs for every request.

    Each manifest output is a zero tensor (``b""`` for BYTES) of its declared shape with every
    free dimension (-1) set to 1. The arrays are shared between replies and read-only.
    """

    def load(self) -> None:
        self._outputs: Outputs = {spec.name: _zeros(spec) for spec in self.manifest.outputs}

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        return [dict(self._outputs) for _ in batch]


def _zeros(spec: TensorSpec) -> np.ndarray[Any, Any]:
    shape = tuple(1 if d < 0 else d for d in spec.shape)
    dtype = numpy_dtype(spec.datatype)
    array = (
        np.full(shape, b"", dtype=object) if spec.datatype == "BYTES" else np.zeros(shape, dtype)
    )
    array.flags.writeable = False  # one array answers every request; nobody may change it
    return array


def _sig(specs: Sequence[TensorSpec]) -> list[str]:
    return [f"{s.name}:{s.datatype}" for s in specs]
