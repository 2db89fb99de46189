"""Guard rules: a canary that crosses its bound over a window is rolled back by the router.

``GuardWatch`` (pure) keeps each canary version's recent hops and says which of the stage's
rules are crossed: ``error_rate`` (share of non-ok hops) or ``p99_latency_ms``, over the last
``window_s`` seconds and only with at least ``min_requests`` hops. ``GuardHook`` feeds it from
the router's hook seam and, once per canary version, asks for the canary to be cleared: the
change is written as one control record by ``router:guard`` naming the rule and the figure, so
every router converges, ``modelyard history`` shows it, and ``modelyard_router_guard_trips``
counts it. (``shadow_disagreement`` is measured by the shadow auditor and not enforced yet.)
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import structlog
from prometheus_client import CollectorRegistry, Counter

from modelyard.control import ControlState, GuardRule
from modelyard.router.live import Hop
from modelyard.router.telemetry import RouterHooks

__all__ = ["GuardHook", "GuardWatch", "Trip"]

log = structlog.get_logger("modelyard.router.guards")

Key = tuple[str, str]  # stage, canary version


@dataclass(frozen=True)
class Trip:
    stage: str
    version: str
    rule: GuardRule
    value: float
    requests: int

    @property
    def reason(self) -> str:
        return (
            f"guard: canary {self.stage} {self.version} {self.rule.metric} {self.value:.3g} > "
            f"{self.rule.max:g} over {self.rule.window_s:g} s ({self.requests} requests)"
        )


class GuardWatch:
    """Recent canary hops per (stage, version): (time, ok, latency ms)."""

    def __init__(self) -> None:
        self._hops: defaultdict[Key, deque[tuple[float, bool, float]]] = defaultdict(deque)

    def add(self, stage: str, version: str, ok: bool, latency_ms: float, now: float) -> None:
        self._hops[(stage, version)].append((now, ok, latency_ms))

    def crossed(
        self, stage: str, version: str, rules: tuple[GuardRule, ...], now: float
    ) -> Trip | None:
        """The first rule this canary crosses, if any (old hops are dropped as a side effect)."""
        hops = self._hops[(stage, version)]
        horizon = now - max((r.window_s for r in rules), default=0.0)
        while hops and hops[0][0] < horizon:
            hops.popleft()
        for rule in rules:
            window = [h for h in hops if h[0] >= now - rule.window_s]
            if len(window) < rule.min_requests or rule.metric == "shadow_disagreement":
                continue
            value = _measure(rule, window)
            if value > rule.max:
                return Trip(stage, version, rule, value, len(window))
        return None


def _measure(rule: GuardRule, window: list[tuple[float, bool, float]]) -> float:
    if rule.metric == "error_rate":
        return sum(not ok for _, ok, _ in window) / len(window)
    return float(np.percentile([latency for _, _, latency in window], 99))


class GuardHook(RouterHooks):
    """Watches canary hops; on a trip, ``clear_canary(trip)`` runs on a thread of its own (it
    writes a control record) so the router's loop never waits on it."""

    def __init__(
        self,
        pipeline: str,
        routing: Callable[[], ControlState],
        clear_canary: Callable[[Trip], None],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.pipeline, self._routing, self._clear = pipeline, routing, clear_canary
        self._watch = GuardWatch()
        self._tripped: set[Key] = set()
        self._threads: list[threading.Thread] = []
        self._trips = Counter(
            "modelyard_router_guard_trips", "Canaries rolled back by a guard rule.",
            ["pipeline", "stage", "version", "metric"], registry=registry or CollectorRegistry(),
        )  # fmt: skip

    def hop_finished(self, hop: Hop, outcome: str) -> None:
        d = hop.dispatch
        if d.role != "canary" or (d.stage, d.version) in self._tripped:
            return
        state = self._routing().stage(self.pipeline, d.stage)
        if not state.guards or state.canary is None or state.canary.version != d.version:
            return
        now = time.monotonic()
        latency_ms = (now - hop.started) * 1000
        self._watch.add(d.stage, d.version, outcome == "ok", latency_ms, now)
        trip = self._watch.crossed(d.stage, d.version, state.guards, now)
        if trip is not None:
            self._trip(trip)

    def _trip(self, trip: Trip) -> None:
        self._tripped.add((trip.stage, trip.version))
        self._trips.labels(self.pipeline, trip.stage, trip.version, trip.rule.metric).inc()
        log.warning("guard tripped: rolling the canary back", reason=trip.reason)
        thread = threading.Thread(target=self._clear_safely, args=(trip,), name="modelyard-guard")
        self._threads.append(thread)
        thread.start()

    def _clear_safely(self, trip: Trip) -> None:
        try:
            self._clear(trip)
        except Exception:  # another router cleared it first, or the broker is away: logged
            log.warning("guard could not clear the canary", reason=trip.reason, exc_info=True)

    def join(self, timeout_s: float = 10.0) -> None:
        """Wait for rollbacks being written (at shutdown)."""
        for thread in self._threads:
            thread.join(timeout_s)
