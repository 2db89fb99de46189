"""The monitor's guards: a canary or shadow whose closed window crosses one of its stage's
monitor rules (``p99_latency_ratio``, ``drift_psi``, ``drift_p_value``, ``shadow_agreement``) is
withdrawn: its canary and shadow cleared in one control record, signed by the monitor's writer
key, whose reason names the rule, the figure, the window and the reference.

A rule is judged only while the routing still gives the version that role, and once per version
(``TripActions``: re-armed when the routing no longer does). Without a writer key the monitor
says that it tripped (log, metric) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from modelyard.control import ControlState
from modelyard.control.guard_watch import GuardWatch, Trip, TripActions
from modelyard.control.routing import MONITOR_METRICS, StageRouting
from modelyard.control.topic import Withdrawal, withdrawer
from modelyard.control.verify import ControlVerifier
from modelyard.keys import SigningKey
from modelyard.monitor.judge import Assessment, crossed_rule
from modelyard.monitor.summary import iso

__all__ = ["MonitorGuard", "withdrawing_monitor_guard"]

log = structlog.get_logger("modelyard.monitor.guard")


class MonitorGuard:
    def __init__(
        self,
        routing: Callable[[], ControlState],
        withdraw: Withdrawal,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """``withdraw(pipeline, stage, version, reason)`` runs on a thread of its own."""
        self._routing = routing
        self._actions = TripActions(lambda trip: withdraw(*self._context[trip]))
        self._context: dict[Trip, tuple[str, str, str, str]] = {}
        self._idle = GuardWatch(MONITOR_METRICS)  # TripActions re-arms through a watch
        self._trips = Counter(
            "modelyard_monitor_guard_trips", "Versions withdrawn by a monitor guard rule.",
            ["pipeline", "stage", "version", "metric"], registry=registry or CollectorRegistry(),
        )  # fmt: skip

    def check(self, assessment: Assessment) -> Trip | None:
        """Judge one assessment; the trip it fired, if any."""
        key = assessment.key
        state = self._routing()
        routing = state.stage(key.pipeline, key.stage)
        # one monitor judges every pipeline: trips are kept per "pipeline/stage"
        where = f"{key.pipeline}/{key.stage}"
        if self._actions.has_tripped:
            self._actions.rearm(lambda s, v: _in_role(state.stage(*s.split("/", 1)), v), self._idle)
        if self._actions.tripped(where, key.version) or not _in_role(routing, key.version):
            return None
        crossed = crossed_rule(assessment, routing.guards)
        if crossed is None:
            return None
        rule, value = crossed
        trip = Trip(where, key.version, rule, value, assessment.requests, key.role)
        reason = (
            f"monitor guard: {key.role} {key.stage} {key.model}:{key.version} {rule.metric} "
            f"{value:.3g} {rule.bound} in the window from {iso(assessment.start)} "
            f"({assessment.requests} requests; reference {assessment.reference or 'none'})"
        )
        self._context[trip] = (key.pipeline, key.stage, key.version, reason)
        self._trips.labels(key.pipeline, key.stage, key.version, rule.metric).inc()
        log.warning("guard tripped: withdrawing the version", reason=reason)
        self._actions.fire(trip)
        return trip

    def join(self, timeout_s: float = 10.0) -> None:
        """Wait for withdrawals being written (at shutdown)."""
        self._actions.join(timeout_s)


def _in_role(routing: StageRouting, version: str) -> bool:
    canary, shadow = routing.canary, routing.shadow
    return (canary is not None and canary.version == version) or (
        shadow is not None and shadow.version == version
    )


def withdrawing_monitor_guard(
    bootstrap: str,
    routing: Callable[[], ControlState],
    *,
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    registry: CollectorRegistry | None = None,
    signer: SigningKey | None = None,
    verifier: ControlVerifier | None = None,
) -> MonitorGuard:
    """A guard that withdraws a tripped version through the control topic, by a record
    ``signer`` signs (None: it can only say that it tripped)."""
    withdraw = withdrawer(bootstrap, prefix=prefix, kafka=kafka, signer=signer, verifier=verifier)
    return MonitorGuard(routing, withdraw, registry)
