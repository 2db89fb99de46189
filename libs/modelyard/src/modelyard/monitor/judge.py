"""What the monitor concludes from a closed window (pure): each version's assessment against its
reference, and which guard rule, if any, it crosses.

The reference of a canary or shadow is the active version of the same stage in the same window
(the same traffic, the same minute); the reference of the active version is the stage's saved
baseline (``modelyard monitor baseline save``), if there is one. An assessment holds the drift of
every monitored field (``drift.py``), the p99 latency over the active version's, the shadow
agreement and the label accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelyard.control.routing import MONITOR_METRICS, GuardRule
from modelyard.graph.spec import DriftPolicy
from modelyard.monitor.baselines import Baseline
from modelyard.monitor.drift import FieldDrift, field_drifts
from modelyard.monitor.hops import WindowKey
from modelyard.monitor.summary import WindowSummary, iso
from modelyard.monitor.windows import Distribution

__all__ = ["ASSESSED_ROLES", "Assessment", "assess", "crossed_rule"]

ASSESSED_ROLES = frozenset({"canary", "shadow"})  # what a guard may take traffic from


@dataclass(frozen=True, slots=True)
class Assessment:
    """One version's closed window, judged."""

    key: WindowKey
    start: float
    size_s: float
    requests: int
    reference: str | None  # "active <model>:<version>", "baseline <model>:<version>", or none
    drift: tuple[FieldDrift, ...]
    p99_ratio: float | None
    agreement: float | None
    accuracy: float | None

    @property
    def drifted(self) -> bool:
        return any(d.drifted for d in self.drift)

    def metric(self, name: str) -> float | None:
        """The figure a guard rule of metric ``name`` bounds (None: not measured here)."""
        if name == "p99_latency_ratio":
            return self.p99_ratio
        if name == "drift_psi":
            return max((d.psi for d in self.drift), default=None)
        if name == "drift_p_value":
            return min((d.p_value for d in self.drift), default=None)
        if name == "shadow_agreement":
            return self.agreement
        return None

    def to_json(self) -> dict[str, Any]:
        """The assessment record on ``<prefix>.monitor`` (docs/monitor.md)."""
        return {
            "schema": 1, "kind": "assessment", **self.key._asdict(),
            "start": iso(self.start), "end": iso(self.start + self.size_s),
            "size_s": self.size_s, "requests": self.requests, "reference": self.reference,
            "drifted": self.drifted, "drift": [d.to_json() for d in self.drift],
            "p99_ratio": self.p99_ratio, "agreement": self.agreement, "accuracy": self.accuracy,
        }  # fmt: skip


def assess(
    windows: Iterable[WindowSummary],
    baselines: Mapping[tuple[str, str], Baseline],
    policy_of: Callable[[str], DriftPolicy],
) -> list[Assessment]:
    """The assessments of combined windows of one span, every version of every stage."""
    by_stage: dict[tuple[str, str], list[WindowSummary]] = {}
    for window in windows:
        by_stage.setdefault((window.key.pipeline, window.key.stage), []).append(window)
    out = []
    for (pipeline, stage), group in sorted(by_stage.items()):
        active = _busiest(w for w in group if w.key.role == "active")
        baseline = baselines.get((pipeline, stage))
        for window in group:
            out.append(_assess(window, active, baseline, policy_of(pipeline)))
    return out


def crossed_rule(
    assessment: Assessment, rules: Iterable[GuardRule]
) -> tuple[GuardRule, float] | None:
    """The first monitor rule ``assessment`` crosses (a canary's or shadow's only)."""
    if assessment.key.role not in ASSESSED_ROLES:
        return None
    for rule in rules:
        if rule.metric not in MONITOR_METRICS or assessment.requests < rule.min_requests:
            continue
        value = assessment.metric(rule.metric)
        if value is not None and rule.crossed(value):
            return rule, value
    return None


def _busiest(windows: Iterable[WindowSummary]) -> WindowSummary | None:
    # a rollout inside the window leaves two active versions in it: the busier is the reference
    return max(windows, key=lambda w: w.stats.requests, default=None)


def _assess(
    window: WindowSummary,
    active: WindowSummary | None,
    baseline: Baseline | None,
    policy: DriftPolicy,
) -> Assessment:
    stats = window.stats
    reference, p99_ratio = None, None
    fields: Mapping[str, Distribution] | None = None
    if window.key.role != "active" and active is not None:
        reference = f"active {active.key.model}:{active.key.version}"
        fields = active.stats.fields
        mine, theirs = stats.latency.quantile(0.99), active.stats.latency.quantile(0.99)
        p99_ratio = mine / theirs if mine is not None and theirs else None
    elif window.key.role == "active" and baseline is not None:
        reference = f"baseline {baseline.model}:{baseline.version}"
        fields = baseline.fields
    checked = stats.agree + stats.disagree
    return Assessment(
        key=window.key, start=window.start, size_s=window.size_s, requests=stats.requests,
        reference=reference,
        drift=tuple(field_drifts(stats.fields, fields, policy)) if fields else (),
        p99_ratio=p99_ratio,
        agreement=stats.agree / checked if checked else None,
        accuracy=stats.correct / stats.labelled if stats.labelled else None,
    )  # fmt: skip
