"""The micro-batcher shared by the Kafka and gRPC adapters.

One inference thread owns the model: it waits for work, fills a batch up to ``max_batch_size``
or until ``max_wait_ms`` has passed since the first item, predicts, and hands the items their
outcomes through their ``done`` callback, one call for each run of items that share it (a Kafka
batch is one call). Transient failures are retried with jittered backoff;
a batch that raises anything else is re-run item by item so one poison input cannot fail its
neighbours.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from modelyard.errors import (
    DeadlineExceededError,
    ModelError,
    ModelyardError,
    RetryableError,
)
from modelyard.model import Inputs, Model, Outcome
from modelyard.repository.manifest import Batching
from modelyard.telemetry.hooks import Hooks, RequestContext

__all__ = ["Batcher", "RetryPolicy", "WorkItem"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class WorkItem:
    """One request waiting for the model, and who to tell when it is done."""

    request: RequestContext
    inputs: Inputs
    # gets consecutive items of one batch that share it, with their outcomes in the same order
    done: Callable[[list[WorkItem], list[Outcome]], None]
    deadline_ms: int | None = None
    token: Any = None  # the adapter's own handle (e.g. the Kafka message)
    tries: int = 0  # predict calls already spent on it by an inline run (transient failures)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))


@dataclass
class _Queue:
    items: deque[WorkItem] = field(default_factory=deque)
    cond: threading.Condition = field(default_factory=threading.Condition)
    closed: bool = False


class Batcher:
    def __init__(
        self, model: Model, batching: Batching, hooks: Hooks, retry: RetryPolicy | None = None
    ) -> None:
        self.model = model
        self.batching = batching
        self.hooks = hooks
        self.retry = retry or RetryPolicy()
        self._queue = _Queue()
        self._model_lock = threading.Lock()  # one predict at a time, whichever thread runs it
        self._seconds_per_item = 0.0  # moving average: decides whether inline runs pay
        self._measured = False  # whether any predict call has been timed yet
        self._thread = threading.Thread(target=self._run, name="modelyard-infer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, items: Sequence[WorkItem]) -> None:
        """Queue items for inference (thread-safe)."""
        with self._queue.cond:
            self._queue.items.extend(items)
            self._queue.cond.notify()

    def run_inline(self, items: Sequence[WorkItem], max_item_s: float = 0.001) -> bool:
        """Run ``items`` on the calling thread if the model is fast, idle and nothing is queued.

        Saves the hand-off to the inference thread (and the GIL ping-pong it costs) for fast
        models; slow ones always go through the queue, so callers can pause their intake. An
        inline run does not wait out retry backoffs: a batch that fails transiently moves to
        the inference thread, which retries it within the same attempt budget.
        """
        if self._seconds_per_item > max_item_s or self._queue.items:
            return False
        if not self._model_lock.acquire(blocking=False):
            return False
        try:
            size = self.batching.max_batch_size
            for start in range(0, len(items), size):
                self._process(list(items[start : start + size]), inline=True)
        finally:
            self._model_lock.release()
        return True

    def predict_inline(self, item: WorkItem, max_item_s: float = 0.001) -> Outcome | None:
        """``item``'s outcome, computed on the calling thread; None when it should be queued.

        For one request from an event loop: like ``run_inline``, but the outcome is returned
        instead of handed to ``item.done`` (no future, no callback), and it refuses until a
        predict call has been timed, since an event loop must not block on a model that may turn
        out slow. None also when a transient failure calls for a retry after a backoff; the
        tries spent are recorded on the item, so the inference thread keeps to the same budget.
        """
        if not self._measured or self._seconds_per_item > max_item_s or self._queue.items:
            return None
        if not self._model_lock.acquire(blocking=False):
            return None
        try:
            if _expired(item, time.time() * 1000):
                return _deadline_passed()
            outcomes = self._predict_with_retry([item], inline=True)
        finally:
            self._model_lock.release()
        return None if outcomes is None else outcomes[0]

    @property
    def depth(self) -> int:
        return len(self._queue.items)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the inference thread."""
        with self._queue.cond:
            self._queue.closed = True
            self._queue.cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            with self._model_lock:
                self._process(batch)

    def _next_batch(self) -> list[WorkItem] | None:
        q, size = self._queue, self.batching.max_batch_size
        with q.cond:
            while not q.items:
                if q.closed:
                    return None
                q.cond.wait()
            deadline = time.monotonic() + self.batching.max_wait_ms / 1000
            while (
                len(q.items) < size and not q.closed and (left := deadline - time.monotonic()) > 0
            ):
                q.cond.wait(left)
            return [q.items.popleft() for _ in range(min(size, len(q.items)))]

    def _process(self, batch: list[WorkItem], *, inline: bool = False) -> None:
        live = self._drop_expired(batch)
        if not live:
            return
        outcomes = self._predict_with_retry(live, inline=inline)
        if outcomes is None:  # an inline run met a transient failure: retry on our thread
            self.submit(live)
            return
        _deliver(live, outcomes)

    def _drop_expired(self, batch: list[WorkItem]) -> list[WorkItem]:
        now_ms = time.time() * 1000
        live: list[WorkItem] = []
        expired: list[WorkItem] = []
        for item in batch:
            (expired if _expired(item, now_ms) else live).append(item)
        if expired:
            _deliver(expired, [_deadline_passed() for _ in expired])
        return live

    def _predict_with_retry(
        self, batch: list[WorkItem], *, inline: bool = False
    ) -> list[Outcome] | None:
        """Outcomes, or None when ``inline`` and a retry (with its backoff) is due."""
        spent = max([item.tries for item in batch])  # a list: cheaper than a generator here
        if spent:
            time.sleep(self.retry.delay(spent))  # the backoff the inline run did not wait
        for attempt in range(spent + 1, self.retry.max_attempts + 1):
            try:
                return self._predict(batch)
            except RetryableError as exc:
                if attempt == self.retry.max_attempts:
                    return [exc] * len(batch)
                if inline:
                    for item in batch:
                        item.tries = attempt
                    return None
                time.sleep(self.retry.delay(attempt))  # inference thread only: also slows intake
            except Exception as exc:  # model code may raise anything
                return self._isolate(batch, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _isolate(self, batch: list[WorkItem], error: Exception) -> list[Outcome]:
        """A batch raised: run each item alone so only the poison one fails."""
        if len(batch) == 1:
            return [_as_model_error(error)]
        return [self._predict_alone(item) for item in batch]

    def _predict_alone(self, item: WorkItem) -> Outcome:
        item.tries = 0  # isolation starts a fresh budget per item
        outcomes = self._predict_with_retry([item])
        assert outcomes is not None  # not inline: retries happen here
        return outcomes[0]

    def _predict(self, batch: list[WorkItem]) -> list[Outcome]:
        requests = [item.request for item in batch]
        self.hooks.batch_started(requests)
        started, error = time.perf_counter(), None
        try:
            outcomes = self.model.predict([item.inputs for item in batch])
            if len(outcomes) != len(batch):
                raise ModelError(f"model returned {len(outcomes)} outcomes for {len(batch)} inputs")
            return outcomes
        except BaseException as exc:
            error = exc
            raise
        finally:
            seconds = time.perf_counter() - started
            self._seconds_per_item += 0.2 * (seconds / len(batch) - self._seconds_per_item)
            self._measured = True
            self.hooks.batch_finished(requests, seconds, error)


def _expired(item: WorkItem, now_ms: float) -> bool:
    return item.deadline_ms is not None and item.deadline_ms < now_ms


def _deadline_passed() -> DeadlineExceededError:
    return DeadlineExceededError("deadline passed before the model ran")


def _deliver(items: list[WorkItem], outcomes: list[Outcome]) -> None:
    """Hand outcomes to their adapters, one call per run of consecutive items that share a
    ``done``; a failing adapter must not stop the inference thread."""
    start, count = 0, len(items)
    while start < count:
        done, end = items[start].done, start + 1
        while end < count and items[end].done is done:
            end += 1
        try:
            done(items[start:end], outcomes[start:end])
        except Exception:  # the adapter records its own failure (e.g. the Kafka consumer stops)
            ids = [item.request.request_id for item in items[start:end]]
            log.exception("delivering outcomes failed", request_ids=ids)
        start = end


def _as_model_error(error: Exception) -> ModelyardError:
    if isinstance(error, ModelyardError):
        return error
    return ModelError(f"model raised {type(error).__name__}: {error}")
