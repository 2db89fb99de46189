"""What a hop record says of the values a pipeline spec's ``monitor:`` names: the few scalars
`modelyard monitor` watches for drift, kept whatever the capture policy (a label, a score, a
length, never the text itself).

A stage's ``monitor:`` maps an output (or ``input.<name>``) to how it is watched:

- ``categorical``: the first element, as text (at most 64 characters);
- ``numeric``: the number, or each of the first 8 elements as ``<name>.<i>``; NaN and infinities
  are left out;
- ``length``: the size in bytes of the first element (a text's UTF-8 size, an image's encoded
  size), or the element count of a numeric tensor.

A field the reply does not hold, or cannot be read so, is left out: observing never fails a hop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["INPUT", "Observed", "observe"]

Observed = dict[str, str | float]
_MAX_TEXT = 64
_MAX_ELEMENTS = 8
INPUT = "input."


def observe(
    monitored: Mapping[str, str], inputs: Mapping[str, Any] | None, outputs: Mapping[str, Any]
) -> Observed | None:
    """The observed values of one hop (None when nothing is monitored or readable)."""
    observed: Observed = {}
    for name, kind in monitored.items():
        fields = inputs if name.startswith(INPUT) else outputs
        value = None if fields is None else fields.get(name.removeprefix(INPUT))
        if value is not None:
            observed.update(_read(name, kind, value))
    return observed or None


def _read(name: str, kind: str, value: Any) -> Observed:
    try:
        array = np.asarray(value, dtype=object if kind != "numeric" else float).ravel()
    except (TypeError, ValueError):
        return {}
    if array.size == 0:
        return {}
    if kind == "categorical":
        return {name: _text(array[0])[:_MAX_TEXT]}
    if kind == "length":
        return {name: float(_length(array))}
    numbers = [float(x) for x in array[:_MAX_ELEMENTS]]
    if array.size == 1:
        return {name: numbers[0]} if math.isfinite(numbers[0]) else {}
    return {f"{name}.{i}": x for i, x in enumerate(numbers) if math.isfinite(x)}


def _text(item: Any) -> str:
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item).decode("utf-8", "replace")
    return str(item)


def _length(array: np.ndarray[Any, Any]) -> int:
    first = array[0]
    if isinstance(first, bytes | bytearray | memoryview):
        return len(first)
    if isinstance(first, str):
        return len(first.encode("utf-8", "replace"))
    return int(array.size)
