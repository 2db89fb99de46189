"""The transport-neutral core of a stage: validate a request, queue it, hand back its outcome.

The Kafka consumer and the gRPC servicer only decode, call this, and encode; neither imports the
other, and this module imports neither ``grpc`` nor ``confluent_kafka``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelyard.errors import DeadlineExceededError, ModelyardError, PayloadTooLargeError
from modelyard.model import Model, Outcome, Outputs
from modelyard.repository.manifest import Manifest
from modelyard.stage.batcher import Batcher, WorkItem
from modelyard.stage.statistics import StageStatistics
from modelyard.telemetry.hooks import HookChain, Hooks, RequestContext
from modelyard.tensors import InputValidator

__all__ = ["StageCore", "outcome_code"]


def outcome_code(outcome: Outcome) -> str:
    """ "ok", or the error code of a failed outcome (for metrics and logs)."""
    return outcome.code if isinstance(outcome, ModelyardError) else "ok"


class StageCore:
    """One model version behind a batcher, shared by every transport of the process.

    It keeps the model's inference statistics (``statistics``) by adding their hook to
    ``hooks``; the batcher and every transport given ``core.hooks`` report to that chain.
    """

    def __init__(self, model: Model, batcher: Batcher, hooks: Hooks) -> None:
        self.model = model
        self.batcher = batcher
        self.statistics = StageStatistics()
        self.hooks = _chain(hooks, self.statistics)
        batcher.hooks = self.hooks  # its batches reach the statistics too
        self._validate_inputs = InputValidator(model.manifest.inputs)

    @property
    def manifest(self) -> Manifest:
        return self.model.manifest

    def ready(self) -> bool:
        return self.model.ready()

    def validate(self, fields: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Inputs as tensors matching the manifest, within its limits (raises ValidationError)."""
        tensors = self._validate_inputs(fields)
        max_chars = self.manifest.limits.max_text_chars
        if max_chars is not None:
            for name, tensor in tensors.items():
                if tensor.dtype == object and any(len(v) > max_chars for v in tensor.reshape(-1)):
                    raise PayloadTooLargeError(
                        f"input {name!r} is longer than {max_chars} characters"
                    )
        return tensors

    def submit(self, items: list[WorkItem]) -> None:
        """Queue already-validated work; the items' callback runs on the inference thread.

        The caller has already reported ``request_received`` (it decodes before validating).
        Fast models run the items right here when nothing else is waiting for the model.
        """
        if not self.batcher.run_inline(items):
            self.batcher.submit(items)

    async def infer(
        self, request: RequestContext, fields: Mapping[str, Any], deadline_ms: int | None = None
    ) -> Outputs:
        """Serve one request from asyncio code; raises the ModelyardError it failed with.

        Like Kafka intake, a model measured fast and idle runs the request right here on the
        event loop, saving two thread hand-offs; otherwise the inference thread runs it.
        """
        self.hooks.request_received(request)
        try:
            inputs = self.validate(fields)
        except ModelyardError as exc:
            self._finish(request, exc)
            raise
        item = WorkItem(request, inputs, _unqueued, deadline_ms)
        outcome = self.batcher.predict_inline(item)
        if outcome is None:
            outcome = await self._queued(item)
        self._finish(request, outcome)
        if isinstance(outcome, ModelyardError):
            raise outcome
        return outcome

    async def _queued(self, item: WorkItem) -> Outcome:
        """``item``'s outcome from the inference thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        item.done = functools.partial(_hand_back, loop, future)
        self.batcher.submit([item])
        try:
            return await future
        except asyncio.CancelledError:  # the caller went away; still report the request
            self._finish(item.request, DeadlineExceededError("cancelled by the caller"))
            raise

    def _finish(self, request: RequestContext, outcome: Outcome) -> None:
        self.hooks.request_finished(
            request, outcome_code(outcome), time.monotonic() - request.received_at
        )


def _chain(hooks: Hooks, extra: Hooks) -> HookChain:
    """``hooks`` and then ``extra`` as one chain (a chain's members, not the chain, go in)."""
    members = hooks.hooks if isinstance(hooks, HookChain) else (hooks,)
    return HookChain([*members, extra])


def _unqueued(_items: list[WorkItem], _outcomes: list[Outcome]) -> None:
    """An inline run hands its outcome back directly; this item was never queued."""
    raise AssertionError("an inline item's outcome is returned, not delivered")


def _hand_back(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Outcome],
    _items: list[WorkItem],
    outcomes: list[Outcome],
) -> None:
    [outcome] = outcomes  # the callback is this request's own: a run of one
    loop.call_soon_threadsafe(_resolve, future, outcome)


def _resolve(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(outcome)
