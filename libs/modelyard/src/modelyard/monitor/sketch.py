"""Value sketches: DDSketch (``ddsketch``), mergeable across windows and instances.

A quantile it answers is within ``RELATIVE_ACCURACY`` (1 %) of the exact value at that rank
(the sample at index ``floor(q * (n - 1))`` of the sorted values), whatever the distribution,
and two sketches merge into exactly the sketch of both samples. It travels as JSON: its bins
(key -> count; negative values' bins under ``neg``), the count of zeros and the exact count,
sum, min and max. This module is the only one that knows ddsketch's internals.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from ddsketch import DDSketch

__all__ = ["RELATIVE_ACCURACY", "LatencySketch", "ValueSketch"]

RELATIVE_ACCURACY = 0.01


class ValueSketch:
    """Any real values, with quantiles within 1 % relative error; its bins can be read back as
    weighted values (each bin's representative value), which the drift tests compare."""

    __slots__ = ("_sketch",)

    def __init__(self) -> None:
        self._sketch = DDSketch(RELATIVE_ACCURACY)

    @property
    def count(self) -> int:
        return int(self._sketch.count)

    def add(self, value: float) -> None:
        self._sketch.add(value)

    def merge(self, other: ValueSketch) -> None:
        self._sketch.merge(other._sketch)

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1), or None when empty."""
        value = self._sketch.get_quantile_value(q)
        return None if value is None else float(value)

    def stats(self) -> dict[str, float | None]:
        """p50, p95, p99, min, max and mean (None when empty)."""
        s = self._sketch
        empty = s.count == 0
        return {
            "p50": self.quantile(0.5), "p95": self.quantile(0.95), "p99": self.quantile(0.99),
            "min": None if empty else float(s._min), "max": None if empty else float(s._max),
            "mean": None if empty else float(s.sum / s.count),
        }  # fmt: skip

    def weighted(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """(values, weights): each non-empty bin's representative value and count, ascending."""
        s = self._sketch
        value = s._mapping.value
        pos, neg = _bins(s._store), _bins(s._negative_store)
        pairs = [(-value(int(k)), c) for k, c in neg.items()]
        pairs += [(value(int(k)), c) for k, c in pos.items()]
        if s._zero_count:
            pairs.append((0.0, s._zero_count))
        pairs.sort()
        return np.array([v for v, _ in pairs]), np.array([c for _, c in pairs])

    def to_json(self) -> dict[str, Any]:
        """Its bins and exact figures, as JSON values."""
        s = self._sketch
        data: dict[str, Any] = {
            "alpha": RELATIVE_ACCURACY, "bins": _bins(s._store), "zero": s._zero_count,
            "count": s.count, "sum": s.sum,
            "min": None if s.count == 0 else s._min, "max": None if s.count == 0 else s._max,
        }  # fmt: skip
        negative = _bins(s._negative_store)
        if negative:
            data["neg"] = negative
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The sketch ``to_json`` gave (ValueError for another accuracy: it would not merge)."""
        if float(data["alpha"]) != RELATIVE_ACCURACY:
            raise ValueError(f"sketch accuracy {data['alpha']}, expected {RELATIVE_ACCURACY}")
        sketch = cls()
        s = sketch._sketch
        for key, weight in data["bins"].items():
            s._store.add(int(key), float(weight))
        for key, weight in data.get("neg", {}).items():
            s._negative_store.add(int(key), float(weight))
        s._zero_count = float(data["zero"])
        s._count, s._sum = float(data["count"]), float(data["sum"])
        if data["min"] is not None:
            s._min, s._max = float(data["min"]), float(data["max"])
        return sketch


class LatencySketch(ValueSketch):
    """Latencies in milliseconds: a negative one (a clock step) counts as 0."""

    __slots__ = ()

    def add(self, value: float) -> None:
        self._sketch.add(max(value, 0.0))


def _bins(store: Any) -> dict[str, float]:
    # ddsketch keeps its bins in a dense store: key = index + offset
    return {str(i + store.offset): c for i, c in enumerate(store.bins) if c}
