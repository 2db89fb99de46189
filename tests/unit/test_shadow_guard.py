"""The shadow-disagreement guard and the withdraw change it writes (pure: no broker)."""

from __future__ import annotations

from typing import Any

import pytest
from modelyard.control import (
    CanaryChange,
    ControlError,
    ControlState,
    GuardRule,
    GuardsChange,
    PipelineRouting,
    Rollout,
    ShadowChange,
    Withdraw,
    apply,
)
from modelyard.control.describe import describe_change
from modelyard.control.guard_watch import CANARY_METRICS, SHADOW_METRICS, GuardWatch, Trip
from modelyard.shadows.guard import ShadowGuard

DISAGREE = GuardRule(metric="shadow_disagreement", max=0.25, window_s=60, min_requests=4)


def _routing(*changes: Any) -> PipelineRouting:
    state = PipelineRouting(pipeline="p")
    for change in (Rollout(stage="s", version="1"), *changes):
        state = apply(state, change)
    return state


def test_withdraw_clears_the_shadow_and_the_canary_that_name_the_version() -> None:
    both = _routing(
        CanaryChange(stage="s", version="2", weight=0.1),
        ShadowChange(stage="s", version="2", sample_rate=1.0),
    )
    after = apply(both, Withdraw(stage="s", version="2")).stage("s")
    assert (after.active, after.canary, after.shadow) == ("1", None, None)


def test_withdraw_leaves_what_names_another_version() -> None:
    state = _routing(
        CanaryChange(stage="s", version="3", weight=0.1),
        ShadowChange(stage="s", version="2", sample_rate=0.5),
    )
    after = apply(state, Withdraw(stage="s", version="2")).stage("s")
    assert after.shadow is None
    assert after.canary is not None
    assert after.canary.version == "3"
    with pytest.raises(ControlError, match="neither canary nor shadow"):
        apply(state, Withdraw(stage="s", version="1"))  # the active version: roll back instead
    assert describe_change(Withdraw(stage="s", version="2")) == "withdraw s 2"


def test_a_watch_judges_only_its_own_metrics() -> None:
    error_rule = GuardRule(metric="error_rate", max=0.1, window_s=60, min_requests=2)
    canary, shadow = GuardWatch(CANARY_METRICS), GuardWatch(SHADOW_METRICS, role="shadow")
    for watch in (canary, shadow):
        for t in (1.0, 2.0):
            watch.add("s", "2", ok=False, latency_ms=1.0, now=t)
    rules = (error_rule, DISAGREE.model_copy(update={"min_requests": 2}))
    canary_trip, shadow_trip = (
        canary.crossed("s", "2", rules, 2.0),
        shadow.crossed("s", "2", rules, 2.0),
    )
    assert canary_trip is not None
    assert canary_trip.rule.metric == "error_rate"
    assert shadow_trip is not None
    assert shadow_trip.rule.metric == "shadow_disagreement"
    assert shadow_trip.reason.startswith("guard: shadow s 2 shadow_disagreement 1 > 0.25")


def _record(agrees: bool | None, at: float, version: str = "2") -> dict[str, Any]:
    return {"stage": "s", "version": version, "agrees": agrees, "finished_at": at,
            "latency_ms": 3.0}  # fmt: skip


class _Withdrawals:
    def __init__(self) -> None:
        self.trips: list[Trip] = []

    def __call__(self, trip: Trip) -> None:
        self.trips.append(trip)


def _guard(routing: PipelineRouting) -> tuple[ShadowGuard, _Withdrawals]:
    state = ControlState({"p": routing})
    withdrawals = _Withdrawals()
    return ShadowGuard("p", lambda: state, withdrawals), withdrawals


def test_the_guard_withdraws_once_when_disagreement_crosses_the_bound() -> None:
    routing = _routing(
        ShadowChange(stage="s", version="2", sample_rate=1.0),
        GuardsChange(stage="s", rules=(DISAGREE,)),
    )
    guard, withdrawals = _guard(routing)
    guard.observe(_record(None, 100.0))  # nothing to compare: not counted
    for i, agrees in enumerate([True, False, True]):
        guard.observe(_record(agrees, 101.0 + i))
    guard.join()
    assert withdrawals.trips == []  # 3 compared runs < min_requests
    guard.observe(_record(False, 104.0))  # 2 of 4 disagree: 0.5 > 0.25
    guard.observe(_record(False, 105.0))  # tripped already: no second withdrawal
    guard.join()
    [trip] = withdrawals.trips
    assert (trip.stage, trip.version, trip.requests) == ("s", "2", 4)
    assert trip.value == pytest.approx(0.5)


def test_the_guard_ignores_runs_it_has_no_rule_for() -> None:
    shadowed = ShadowChange(stage="s", version="2", sample_rate=1.0)
    unguarded, _ = _guard(_routing(shadowed))
    guarded, withdrawals = _guard(_routing(shadowed, GuardsChange(stage="s", rules=(DISAGREE,))))
    for t in range(6):
        unguarded.observe(_record(False, float(t)))
        guarded.observe(_record(False, float(t), version="3"))  # no longer the shadow
        guarded.observe(_record(False, 1000.0 * t))  # never 4 within one window
    guarded.join()
    assert withdrawals.trips == []


def test_a_withdrawn_version_shadowed_again_is_judged_afresh() -> None:
    shadowed = _routing(
        ShadowChange(stage="s", version="2", sample_rate=1.0),
        GuardsChange(stage="s", rules=(DISAGREE,)),
    )
    state = {"now": ControlState({"p": shadowed})}
    withdrawals = _Withdrawals()
    guard = ShadowGuard("p", lambda: state["now"], withdrawals)
    for t in range(4):
        guard.observe(_record(False, float(t)))
    guard.join()
    assert len(withdrawals.trips) == 1
    state["now"] = ControlState({"p": apply(shadowed, Withdraw(stage="s", version="2"))})
    guard.observe(_record(False, 4.0))  # a late run of the withdrawn version re-arms the guard
    state["now"] = ControlState({"p": shadowed})  # the operator shadows it again
    for t in range(5, 8):
        guard.observe(_record(False, float(t)))
    guard.join()
    assert len(withdrawals.trips) == 1  # 3 runs since it came back: below min_requests
    guard.observe(_record(False, 8.0))
    guard.join()
    assert len(withdrawals.trips) == 2
    assert withdrawals.trips[1].requests == 4  # the runs before the withdrawal were forgotten
