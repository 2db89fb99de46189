"""Guard rules judged over a window of recent outcomes (pure), and the thread that acts on a trip.

``GuardWatch`` keeps recent outcomes per (stage, version) and says which of a stage's rules is
crossed over the last ``window_s`` seconds, with at least ``min_requests`` outcomes in it:
``error_rate`` (share not ok), ``p99_latency_ms``, or ``shadow_disagreement`` (share of compared
shadow runs whose outputs differ from the primary's). A watch judges only the metrics it is
given: the router watches canary hops (error rate, latency), the shadow auditor shadow runs
(disagreement).

``TripActions`` runs what a trip does (it writes a control record) once per (stage, version), on
a thread of its own, so the loop that noticed never waits on the broker; once the routing no
longer gives that version its role, the trip is re-armed.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import structlog
from confluent_kafka import KafkaException

from modelyard.control.routing import GuardRule
from modelyard.control.topic import ConcurrentChangeError
from modelyard.errors import UnavailableError

__all__ = ["CANARY_METRICS", "SHADOW_METRICS", "GuardWatch", "Trip", "TripActions"]

log = structlog.get_logger("modelyard.guards")

CANARY_METRICS = frozenset({"error_rate", "p99_latency_ms"})
SHADOW_METRICS = frozenset({"shadow_disagreement"})

Key = tuple[str, str]  # stage, version


@dataclass(frozen=True)
class Trip:
    stage: str
    version: str
    rule: GuardRule
    value: float
    requests: int
    role: str = "canary"  # what the version was doing: canary or shadow

    @property
    def reason(self) -> str:
        return (
            f"guard: {self.role} {self.stage} {self.version} {self.rule.metric} "
            f"{self.value:.3g} {self.rule.bound} over {self.rule.window_s:g} s "
            f"({self.requests} requests)"
        )


class GuardWatch:
    """Recent outcomes per (stage, version): (time, ok, latency ms)."""

    def __init__(self, metrics: Collection[str] = CANARY_METRICS, role: str = "canary") -> None:
        self.metrics, self.role = frozenset(metrics), role
        self._outcomes: defaultdict[Key, deque[tuple[float, bool, float]]] = defaultdict(deque)

    def add(self, stage: str, version: str, ok: bool, latency_ms: float, now: float) -> None:
        self._outcomes[(stage, version)].append((now, ok, latency_ms))

    def forget(self, stage: str, version: str) -> None:
        """Drop a version's outcomes: if it comes back, it is judged afresh."""
        self._outcomes.pop((stage, version), None)

    def crossed(
        self, stage: str, version: str, rules: tuple[GuardRule, ...], now: float
    ) -> Trip | None:
        """The first watched rule this version crosses, if any (old outcomes are dropped)."""
        rules = tuple(r for r in rules if r.metric in self.metrics)
        outcomes = self._outcomes[(stage, version)]
        horizon = now - max((r.window_s for r in rules), default=0.0)
        while outcomes and outcomes[0][0] < horizon:
            outcomes.popleft()
        for rule in rules:
            window = [o for o in outcomes if o[0] >= now - rule.window_s]
            if len(window) < rule.min_requests:
                continue
            value = _measure(rule, window)
            if rule.crossed(value):
                return Trip(stage, version, rule, value, len(window), self.role)
        return None


def _measure(rule: GuardRule, window: list[tuple[float, bool, float]]) -> float:
    if rule.metric == "p99_latency_ms":
        return float(np.percentile([latency for _, _, latency in window], 99))
    return sum(not ok for _, ok, _ in window) / len(window)  # error rate, disagreement


# a trip's action is tried again after these pauses when it fails in a way that may pass
_RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)
_TRANSIENT = (UnavailableError, ConcurrentChangeError, KafkaException)


class TripActions:
    """Runs ``act(trip)`` once per (stage, version), each on a thread named ``modelyard-guard``."""

    def __init__(self, act: Callable[[Trip], None]) -> None:
        self._act = act
        self._done: set[Key] = set()
        self._threads: list[threading.Thread] = []

    @property
    def has_tripped(self) -> bool:
        return bool(self._done)

    def tripped(self, stage: str, version: str) -> bool:
        return (stage, version) in self._done

    def rearm(self, still_in_role: Callable[[str, str], bool], watch: GuardWatch) -> None:
        """Re-arm each tripped version the routing no longer gives its role (the action landed,
        or someone else cleared it), so that if it is put back it is judged again."""
        for stage, version in [key for key in self._done if not still_in_role(*key)]:
            self._done.discard((stage, version))
            watch.forget(stage, version)

    def fire(self, trip: Trip) -> None:
        if self.tripped(trip.stage, trip.version):
            return
        self._done.add((trip.stage, trip.version))
        thread = threading.Thread(target=self._act_safely, args=(trip,), name="modelyard-guard")
        self._threads.append(thread)
        thread.start()

    def _act_safely(self, trip: Trip) -> None:
        """Act; again after a failure that may pass (the broker slow or away, another writer's
        change first: the action re-reads the state), ``_RETRY_DELAYS_S`` apart. A version
        left in its role after all of them stays tripped: logged, not retried for ever."""
        for delay_s in (*_RETRY_DELAYS_S, None):
            try:
                self._act(trip)
                return
            except _TRANSIENT as exc:
                if delay_s is None:
                    log.error("guard could not act on its trip", reason=trip.reason,
                              error=str(exc))  # fmt: skip
                    return
                log.warning("guard could not act on its trip yet; trying again",
                            reason=trip.reason, error=str(exc), in_s=delay_s)  # fmt: skip
                time.sleep(delay_s)
            except Exception:  # e.g. another process already took the version away: logged
                log.warning("guard could not act on its trip", reason=trip.reason, exc_info=True)
                return

    def join(self, timeout_s: float = 10.0) -> None:
        """Wait for the actions being written (at shutdown)."""
        for thread in self._threads:
            thread.join(timeout_s)
