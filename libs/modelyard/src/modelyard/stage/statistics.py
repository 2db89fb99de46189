"""Inference statistics of a stage's model, as Triton's statistics extension reports them.

A hook on the stage's one observability seam (``modelyard.telemetry.hooks``) keeps cumulative
counts and nanoseconds, whichever transport brought the request: per request its time from
arrival to reply (success or fail), its wait for the model (queue: arrival to the start of the
batch it ran in) and the model's time on that batch (compute); per model execution its batch
size and time. The gRPC adapter's ``ModelStatistics`` answers from
:meth:`StageStatistics.snapshot`; a client such as perf_analyzer subtracts two snapshots to split
a request's server time into queue and compute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from modelyard.telemetry.hooks import Hooks, RequestContext

__all__ = ["Duration", "StageStatistics", "StatisticsSnapshot"]


@dataclass(slots=True)
class Duration:
    """How many times something happened and the nanoseconds it took in all."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(frozen=True, slots=True)
class StatisticsSnapshot:
    """The statistics at one moment (every figure cumulative since the stage started)."""

    last_inference_ms: int = 0  # epoch milliseconds of the last successful request; 0: none
    inference_count: int = 0  # successful requests
    execution_count: int = 0  # model executions (batches) that succeeded
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute: Duration = field(default_factory=Duration)  # per request: its batch's time
    batches: dict[int, Duration] = field(default_factory=dict)  # batch size -> executions


class StageStatistics(Hooks):
    """Counts every request and batch of the stage; thread-safe (one lock per call)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = self._inferences = self._executions = 0
        self._success, self._fail = Duration(), Duration()
        self._queue, self._compute = Duration(), Duration()
        self._batches: dict[int, Duration] = {}

    def request_finished(self, request: RequestContext, outcome: str, seconds: float) -> None:
        with self._lock:
            self._finished(outcome, int(seconds * 1e9))

    def requests_finished(
        self, requests: Sequence[RequestContext], outcomes: Sequence[str], now: float
    ) -> None:
        with self._lock:  # once per Kafka batch
            for request, outcome in zip(requests, outcomes, strict=True):
                self._finished(outcome, int((now - request.received_at) * 1e9))

    def batch_finished(
        self, batch: Sequence[RequestContext], seconds: float, error: BaseException | None
    ) -> None:
        if error is not None:
            return  # the batch is re-run item by item; those runs are counted
        started = time.monotonic() - seconds
        waited = sum(max(0.0, started - request.received_at) for request in batch)
        ns, size = int(seconds * 1e9), len(batch)
        with self._lock:
            self._queue.add(int(waited * 1e9), size)
            self._executions += 1
            self._compute.add(ns * size, size)
            runs = self._batches.get(size)
            if runs is None:
                runs = self._batches[size] = Duration()
            runs.add(ns)

    def snapshot(self) -> StatisticsSnapshot:
        with self._lock:
            return StatisticsSnapshot(
                self._last_ms, self._inferences, self._executions,
                replace(self._success), replace(self._fail), replace(self._queue),
                replace(self._compute), {k: replace(v) for k, v in self._batches.items()},
            )  # fmt: skip

    def _finished(self, outcome: str, ns: int) -> None:
        """Under the lock: one request's outcome."""
        if outcome != "ok":
            self._fail.add(ns)
            return
        self._success.add(ns)
        self._inferences += 1
        self._last_ms = time.time_ns() // 1_000_000
