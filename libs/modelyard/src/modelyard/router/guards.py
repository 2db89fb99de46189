"""Guard rules on canaries: a canary that crosses its bound over a window is rolled back.

``GuardHook`` feeds a :class:`~modelyard.control.guard_watch.GuardWatch` of canary hops from the
router's hook seam: ``error_rate`` (share of non-ok hops) and ``p99_latency_ms``. Once per canary
version it asks for the canary to be cleared: the change is written as one control record by
``router:guard`` naming the rule and the figure, so every router converges, ``modelyard
history`` shows it, and ``modelyard_router_guard_trips`` counts it. ``shadow_disagreement`` is
judged by the shadow auditor (``shadows/guard.py``), which sees the shadow replies.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry, Counter

from modelyard.control import ControlState
from modelyard.control.guard_watch import CANARY_METRICS, GuardWatch, Trip, TripActions
from modelyard.telemetry.hooks import Hooks, RoutedHop

__all__ = ["GuardHook", "GuardWatch", "Trip"]

log = structlog.get_logger("modelyard.router.guards")


class GuardHook(Hooks):
    """Watches canary hops; on a trip, ``clear_canary(trip)`` runs on a thread of its own (it
    writes a control record) so the router's loop never waits on it."""

    def __init__(
        self,
        pipeline: str,
        routing: Callable[[], ControlState],
        clear_canary: Callable[[Trip], None],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.pipeline, self._routing = pipeline, routing
        self._watch = GuardWatch(CANARY_METRICS, role="canary")
        self._actions = TripActions(clear_canary)
        self._trips = Counter(
            "modelyard_router_guard_trips", "Canaries rolled back by a guard rule.",
            ["pipeline", "stage", "version", "metric"], registry=registry or CollectorRegistry(),
        )  # fmt: skip

    def hop_finished(self, hop: RoutedHop, outcome: str) -> None:
        if hop.role != "canary":
            return
        routing = self._routing()
        if self._actions.has_tripped:
            self._actions.rearm(
                lambda s, v: _canary_of(routing, self.pipeline, s) == v, self._watch
            )
        if self._actions.tripped(hop.stage, hop.version):
            return
        state = routing.stage(self.pipeline, hop.stage)
        if not state.guards or state.canary is None or state.canary.version != hop.version:
            return
        now = time.monotonic()
        latency_ms = (now - hop.started) * 1000
        self._watch.add(hop.stage, hop.version, outcome == "ok", latency_ms, now)
        trip = self._watch.crossed(hop.stage, hop.version, state.guards, now)
        if trip is not None:
            self._trips.labels(self.pipeline, trip.stage, trip.version, trip.rule.metric).inc()
            log.warning("guard tripped: rolling the canary back", reason=trip.reason)
            self._actions.fire(trip)

    def join(self, timeout_s: float = 10.0) -> None:
        """Wait for rollbacks being written (at shutdown)."""
        self._actions.join(timeout_s)


def _canary_of(routing: ControlState, pipeline: str, stage: str) -> str | None:
    canary = routing.stage(pipeline, stage).canary
    return canary.version if canary is not None else None
