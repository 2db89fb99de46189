"""The shadow-disagreement guard: a shadow version that disagrees too often is withdrawn.

The shadow auditor hands every shadow hop record it writes to :class:`ShadowGuard`. When the
stage's routing has a ``shadow_disagreement`` rule and the record's version is still the stage's
shadow, the record counts: a run whose outputs match the primary's agrees; one whose outputs
differ, or that failed where the primary did not, disagrees; a run with nothing to compare (no
reply, or the primary failed) is not counted. Windows run on the records' own times, so an
auditor catching up on a backlog judges each run when it happened.

Crossing the bound withdraws the version (``Withdraw``: its shadow and, if it is also the
canary, its canary are cleared) in one control record, signed by the auditor's writer key (the
keyring lets a writer sign only such retreats), that names the rule and the figure;
``modelyard_shadow_guard_trips`` counts it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from modelyard.control import ControlState
from modelyard.control.guard_watch import SHADOW_METRICS, GuardWatch, Trip, TripActions
from modelyard.control.topic import withdrawer
from modelyard.control.verify import ControlVerifier
from modelyard.keys import SigningKey

__all__ = ["ShadowGuard", "withdrawing_guard"]

log = structlog.get_logger("modelyard.shadows.guard")


class ShadowGuard:
    def __init__(
        self,
        pipeline: str,
        routing: Callable[[], ControlState],
        withdraw: Callable[[Trip], None],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.pipeline, self._routing = pipeline, routing
        self._watch = GuardWatch(SHADOW_METRICS, role="shadow")
        self._actions = TripActions(withdraw)
        self._trips = Counter(
            "modelyard_shadow_guard_trips", "Shadow versions withdrawn by a disagreement guard.",
            ["pipeline", "stage", "version"], registry=registry or CollectorRegistry(),
        )  # fmt: skip

    def observe(self, record: Mapping[str, Any]) -> None:
        """One shadow hop record (``shadow_hop_record`` values), as the auditor writes it."""
        agrees, stage, version = record["agrees"], record["stage"], record["version"]
        routing = self._routing()
        if self._actions.has_tripped:
            self._actions.rearm(
                lambda s, v: _shadow_of(routing, self.pipeline, s) == v, self._watch
            )
        if agrees is None or self._actions.tripped(stage, version):
            return
        state = routing.stage(self.pipeline, stage)
        rules = tuple(r for r in state.guards if r.metric in SHADOW_METRICS)
        if not rules or state.shadow is None or state.shadow.version != version:
            return
        now = float(record["finished_at"])
        self._watch.add(stage, version, bool(agrees), float(record["latency_ms"]), now)
        trip = self._watch.crossed(stage, version, rules, now)
        if trip is not None:
            self._trips.labels(self.pipeline, stage, version).inc()
            log.warning("guard tripped: withdrawing the shadow version", reason=trip.reason)
            self._actions.fire(trip)

    def join(self, timeout_s: float = 10.0) -> None:
        """Wait for withdrawals being written (at shutdown)."""
        self._actions.join(timeout_s)


def _shadow_of(routing: ControlState, pipeline: str, stage: str) -> str | None:
    shadow = routing.stage(pipeline, stage).shadow
    return shadow.version if shadow is not None else None


def withdrawing_guard(
    bootstrap: str,
    pipeline: str,
    routing: Callable[[], ControlState],
    *,
    prefix: str = "yard",
    kafka: Mapping[str, Any] | None = None,
    registry: CollectorRegistry | None = None,
    signer: SigningKey | None = None,
    verifier: ControlVerifier | None = None,
) -> ShadowGuard:
    """A guard that withdraws a tripped version through the control topic, by a record
    ``signer`` signs (None: it can only say that it tripped)."""

    withdraw = withdrawer(bootstrap, prefix=prefix, kafka=kafka, signer=signer, verifier=verifier)

    def act(trip: Trip) -> None:
        withdraw(pipeline, trip.stage, trip.version, trip.reason)

    return ShadowGuard(pipeline, routing, act, registry)
