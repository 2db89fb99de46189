"""Repeated measurements: the order of each round, the median of the rounds, how both print.

One run on a 2-core machine is noisy and the first target measured meets a cold broker, so
the peer benchmarks measure every target in several rounds, rotating the order each round
(a, b, c; then b, c, a; then c, a, b), and decide on the median. A failed round is ``None``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["NOTE", "heading", "median", "rotation", "show"]

T = TypeVar("T")


def rotation(names: Sequence[T], round_no: int) -> list[T]:
    """Round ``round_no``'s order: ``names`` rotated left by ``round_no`` (abc, bca, cab, ...)."""
    k = round_no % len(names)
    return [*names[k:], *names[:k]]


def median(values: Sequence[float | None]) -> float | None:
    """The median of the rounds that gave a figure; ``None`` when none did."""
    got = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(got) if got else None


def show(values: Sequence[float | None], spec: str = ",.1f") -> str:
    """``median (round 1 / round 2 / ...)``, e.g. ``23,100 (21,900 / 23,100 / 25,400)``; one
    round prints alone, a failed round as ``n/a``."""

    def one(v: float | None) -> str:
        return "n/a" if v is None or math.isnan(v) else format(v, spec)

    mid = one(median(values))
    return mid if len(values) == 1 else f"{mid} ({' / '.join(one(v) for v in values)})"


def heading(rounds: int) -> str:
    """How such figures are titled: ``median of 3 rounds``."""
    return "1 round" if rounds == 1 else f"median of {rounds} rounds"


NOTE = "(each round's figure in brackets, in the order run; the target order rotates each round)"
