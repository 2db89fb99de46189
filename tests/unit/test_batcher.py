"""The shared micro-batcher: batch limits, poison isolation, retries, deadlines."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelyard.errors import DeadlineExceededError, ModelError, UnavailableError
from modelyard.model import Inputs, Model, Outcome
from modelyard.repository.manifest import Batching, Manifest
from modelyard.stage.batcher import Batcher, RetryPolicy, WorkItem
from modelyard.telemetry.hooks import Hooks, RequestContext

MANIFEST = Manifest.model_validate(
    {
        "name": "fake",
        "version": "1",
        "runtime": "python",
        "entrypoint": "x:Y",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    }
)


class FakeModel(Model):
    """Doubles x; x < 0 makes the whole batch raise; 'flaky' raises Unavailable N times."""

    def __init__(self, flaky: int = 0) -> None:
        super().__init__(MANIFEST, Path("."))
        self.batch_sizes: list[int] = []
        self.flaky = flaky

    def load(self) -> None: ...

    def predict(self, batch: Sequence[Inputs]) -> list[Outcome]:
        self.batch_sizes.append(len(batch))
        if self.flaky:
            self.flaky -= 1
            raise UnavailableError("engine restarting")
        if any(float(i["x"][0]) < 0 for i in batch):
            raise ValueError("negative input")
        return [{"y": i["x"] * 2} for i in batch]


def run(model: FakeModel, values: list[float], batching: Batching, **item: Any) -> list[Outcome]:
    results: dict[int, Outcome] = {}
    finished = threading.Event()

    def done(ws: list[WorkItem], outcomes: list[Outcome]) -> None:
        for w, outcome in zip(ws, outcomes, strict=True):
            results[w.token] = outcome
        if len(results) == len(values):
            finished.set()

    batcher = Batcher(model, batching, Hooks(), RetryPolicy(3, 0.001))
    items = [
        WorkItem(RequestContext(str(i), "kafka"), {"x": np.array([v], "f4")}, done, token=i, **item)
        for i, v in enumerate(values)
    ]
    batcher.submit(items)  # queued before start, so the first batch is full
    batcher.start()
    assert finished.wait(10)
    batcher.stop()
    return [results[i] for i in range(len(values))]


def test_batches_respect_max_size_and_keep_order() -> None:
    model = FakeModel()
    out = run(model, [1, 2, 3, 4, 5], Batching(max_batch_size=2, max_wait_ms=0))
    assert [float(o["y"][0]) for o in out] == [2, 4, 6, 8, 10]  # type: ignore[index]
    assert model.batch_sizes == [2, 2, 1]


def test_poison_input_fails_alone() -> None:
    model = FakeModel()
    out = run(model, [1, -1, 3], Batching(max_batch_size=8, max_wait_ms=0))
    assert isinstance(out[1], ModelError)
    assert "negative input" in out[1].message
    assert [float(out[i]["y"][0]) for i in (0, 2)] == [2, 6]  # type: ignore[index]


@pytest.mark.parametrize(("flaky", "ok"), [(2, True), (5, False)])
def test_transient_errors_are_retried_within_budget(flaky: int, ok: bool) -> None:
    out = run(FakeModel(flaky=flaky), [1], Batching(max_batch_size=1, max_wait_ms=0))
    assert isinstance(out[0], dict) is ok
    if not ok:
        assert isinstance(out[0], UnavailableError)


def test_expired_deadline_is_not_predicted() -> None:
    model = FakeModel()
    out = run(model, [1], Batching(max_batch_size=1, max_wait_ms=0), deadline_ms=1)
    assert isinstance(out[0], DeadlineExceededError)
    assert model.batch_sizes == []


def test_fast_idle_model_runs_inline_on_the_calling_thread() -> None:
    seen: list[str] = []
    batcher = Batcher(FakeModel(), Batching(max_batch_size=2), Hooks())

    def done(ws: list[WorkItem], _o: list[Outcome]) -> None:
        seen.extend(threading.current_thread().name for _ in ws)

    items = [
        WorkItem(RequestContext(str(i), "kafka"), {"x": np.ones(1, "f4")}, done) for i in range(3)
    ]
    assert batcher.run_inline(items)  # not even started: the caller's thread did the work
    assert seen == [threading.current_thread().name] * 3


def test_slow_model_is_never_run_inline() -> None:
    batcher = Batcher(FakeModel(), Batching(), Hooks())
    batcher._seconds_per_item = 0.5  # as measured on a slow model
    item = WorkItem(RequestContext("r", "kafka"), {"x": np.ones(1, "f4")}, lambda *_: None)
    assert not batcher.run_inline([item])


def test_failing_callback_does_not_stop_the_inference_thread() -> None:
    delivered = threading.Event()

    def explode(_w: list[WorkItem], _o: list[Outcome]) -> None:
        raise RuntimeError("adapter broke")

    batcher = Batcher(FakeModel(), Batching(max_batch_size=1), Hooks())
    batcher.start()
    x = {"x": np.ones(1, "f4")}
    batcher.submit([WorkItem(RequestContext("a", "grpc"), x, explode)])
    batcher.submit([WorkItem(RequestContext("b", "grpc"), x, lambda *_: delivered.set())])
    assert delivered.wait(10)
    batcher.stop()


@pytest.mark.parametrize(("flaky", "ok"), [(2, True), (3, False)])
def test_inline_transient_failure_moves_to_the_inference_thread_within_budget(
    flaky: int, ok: bool
) -> None:
    model = FakeModel(flaky=flaky)
    batcher = Batcher(model, Batching(max_batch_size=1), Hooks(), RetryPolicy(3, 0.001))
    outcomes: list[tuple[str, Outcome]] = []
    finished = threading.Event()

    def done(_w: list[WorkItem], delivered: list[Outcome]) -> None:
        outcomes.extend((threading.current_thread().name, outcome) for outcome in delivered)
        finished.set()

    item = WorkItem(RequestContext("r", "kafka"), {"x": np.ones(1, "f4")}, done)
    assert batcher.run_inline([item])
    assert outcomes == []  # nothing waited on the calling thread
    batcher.start()
    assert finished.wait(10)
    batcher.stop()
    [(thread, outcome)] = outcomes
    assert thread == "modelyard-infer"
    assert isinstance(outcome, dict) is ok
    assert model.batch_sizes == [1] * min(flaky + 1, 3)  # three attempts in all, not more


def _unqueued(_w: list[WorkItem], _o: list[Outcome]) -> None:
    raise AssertionError("predict_inline returns the outcome; nothing is delivered")


def test_predict_inline_waits_until_the_model_has_been_timed() -> None:
    batcher = Batcher(FakeModel(), Batching(), Hooks())
    item = WorkItem(RequestContext("r", "grpc"), {"x": np.ones(1, "f4")}, _unqueued)
    assert batcher.predict_inline(item) is None  # might be slow: never on an event loop
    first = WorkItem(RequestContext("q", "kafka"), {"x": np.ones(1, "f4")}, lambda *_: None)
    assert batcher.run_inline([first])  # timed now, and fast
    outcome = batcher.predict_inline(item)
    assert isinstance(outcome, dict)
    assert float(outcome["y"][0]) == 2


def test_predict_inline_refuses_a_passed_deadline_without_predicting() -> None:
    model = FakeModel()
    batcher = Batcher(model, Batching(), Hooks())
    batcher._measured = True  # as after a first, fast predict
    item = WorkItem(RequestContext("r", "grpc"), {"x": np.ones(1, "f4")}, _unqueued, 1)
    assert isinstance(batcher.predict_inline(item), DeadlineExceededError)
    assert model.batch_sizes == []


def test_predict_inline_leaves_a_transient_failure_to_the_inference_thread() -> None:
    model = FakeModel(flaky=1)
    batcher = Batcher(model, Batching(), Hooks(), RetryPolicy(3, 0.001))
    batcher._measured = True
    item = WorkItem(RequestContext("r", "grpc"), {"x": np.ones(1, "f4")}, _unqueued)
    assert batcher.predict_inline(item) is None  # no backoff slept on the caller's thread
    assert item.tries == 1  # the queued retry continues the same budget
    assert model.batch_sizes == [1]


def test_items_sharing_a_callback_get_one_call_per_batch_in_order() -> None:
    calls: list[list[str]] = []

    def shared(ws: list[WorkItem], outcomes: list[Outcome]) -> None:
        calls.append([w.request.request_id for w in ws])

    def own(ws: list[WorkItem], outcomes: list[Outcome]) -> None:
        calls.append([f"own:{w.request.request_id}" for w in ws])

    batcher = Batcher(FakeModel(), Batching(max_batch_size=8), Hooks())
    x = {"x": np.ones(1, "f4")}
    dones = [shared, shared, own, shared, shared]
    items = [WorkItem(RequestContext(str(i), "kafka"), x, d) for i, d in enumerate(dones)]
    assert batcher.run_inline(items)
    assert calls == [["0", "1"], ["own:2"], ["3", "4"]]  # runs of one callback, in order
