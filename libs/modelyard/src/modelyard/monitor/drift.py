"""Drift of one monitored field: a window's distribution against its reference (pure).

Two figures per field, as docs/monitor.md#drift describes:

- the population stability index, ``sum((p - q) * ln(p / q))`` over categories (categorical) or
  over the reference's quantile bins (numeric), proportions floored at ``1e-4`` so a category
  one side never saw gives a large but finite figure;
- a test's p-value: chi-squared on the 2 x k table of counts (categorical), two-sample
  Kolmogorov-Smirnov (numeric), both from scipy. Numeric samples are the sketch's bins (each
  value within 1 % of the ones it stands for), which is what a mergeable window keeps.

A field is judged only with at least ``min_samples`` values on both sides; it has drifted when
its PSI is above the policy's bound or its p-value, Bonferroni-adjusted for the number of fields
judged in the window, is below the policy's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from modelyard.graph.spec import DriftPolicy
from modelyard.monitor.sketch import ValueSketch
from modelyard.monitor.windows import Categories, Distribution

__all__ = ["FieldDrift", "field_drifts"]

_FLOOR = 1e-4


@dataclass(frozen=True, slots=True)
class FieldDrift:
    """One field's figures against its reference."""

    field: str
    test: Literal["chi2", "ks"]
    psi: float
    p_value: float  # Bonferroni-adjusted over the fields judged with it
    samples: int
    reference_samples: int
    drifted: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field, "test": self.test, "psi": round(self.psi, 6),
            "p_value": self.p_value, "samples": self.samples,
            "reference_samples": self.reference_samples, "drifted": self.drifted,
        }  # fmt: skip


def field_drifts(
    current: Mapping[str, Distribution],
    reference: Mapping[str, Distribution],
    policy: DriftPolicy,
) -> list[FieldDrift]:
    """The drift of every field both sides hold with enough values, by field name."""
    raw = []
    for name in sorted(current.keys() & reference.keys()):
        figures = _compare(current[name], reference[name], policy)
        if figures is not None:
            raw.append((name, *figures))
    drifts = []
    for name, test, psi, p, n, m in raw:
        adjusted = min(1.0, p * len(raw))
        drifted = psi > policy.psi or adjusted < policy.p_value
        drifts.append(FieldDrift(name, test, psi, adjusted, n, m, drifted))
    return drifts


def _compare(
    current: Distribution, reference: Distribution, policy: DriftPolicy
) -> tuple[Literal["chi2", "ks"], float, float, int, int] | None:
    n, m = current.count, reference.count
    if min(n, m) < policy.min_samples:
        return None
    if isinstance(current, Categories) and isinstance(reference, Categories):
        return ("chi2", *_categorical(current, reference), n, m)
    if isinstance(current, ValueSketch) and isinstance(reference, ValueSketch):
        return ("ks", *_numeric(current, reference, policy.bins), n, m)
    return None  # a field that changed kind between versions is no distribution to compare


def _categorical(current: Categories, reference: Categories) -> tuple[float, float]:
    names = sorted(current.counts.keys() | reference.counts.keys())
    a = np.array([current.counts.get(c, 0.0) for c in names])
    b = np.array([reference.counts.get(c, 0.0) for c in names])
    psi = _psi(a, b)
    seen = (a + b) > 0
    if seen.sum() < 2:
        return psi, 1.0  # one category on both sides: nothing a test could tell apart
    result = stats.chi2_contingency(np.vstack([a[seen], b[seen]]))
    return psi, float(result.pvalue)


def _numeric(current: ValueSketch, reference: ValueSketch, bins: int) -> tuple[float, float]:
    x, y = _samples(current), _samples(reference)
    inner = np.unique(np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    # a value equal to an edge falls in the bin to its right, on both sides alike
    psi = _psi(np.histogram(x, edges)[0], np.histogram(y, edges)[0])
    p_value = float(stats.ks_2samp(x, y).pvalue)
    return psi, p_value if math.isfinite(p_value) else 1.0


def _samples(sketch: ValueSketch) -> np.ndarray[Any, Any]:
    values, weights = sketch.weighted()
    return np.repeat(values, np.rint(weights).astype(np.int64))


def _psi(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    p = np.maximum(a / a.sum(), _FLOOR)
    q = np.maximum(b / b.sum(), _FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))
