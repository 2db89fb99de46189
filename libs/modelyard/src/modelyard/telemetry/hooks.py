"""The one observability seam: the stage loop and gRPC adapter call these hooks, nothing else.

Tracing, metrics and logging each implement ``StageHooks`` and are combined with ``HookChain``;
none of them is edited into the loop. A hook that raises is logged and ignored: telemetry never
breaks processing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

__all__ = ["HookChain", "RequestContext", "StageHooks", "fan_out_hooks"]

Carrier = list[tuple[str, bytes]]


@dataclass(slots=True)
class RequestContext:
    """One request as it moves through a stage, whichever transport brought it."""

    request_id: str
    transport: Literal["kafka", "grpc"]
    carrier: Carrier = field(default_factory=list)  # incoming Kafka headers or gRPC metadata
    shadow: bool = False
    attempt: int = 0
    pipeline: str | None = None
    caller: str | None = None
    received_at: float = field(default_factory=time.monotonic)
    scratch: dict[str, Any] = field(default_factory=dict)  # per-hook state (spans, tokens)


class StageHooks:
    """Base class: every hook is a no-op. Override what you observe."""

    # batched method -> the one-request method its default calls per request
    BATCHED: ClassVar[dict[str, str]] = {"requests_finished": "request_finished"}

    def request_received(self, request: RequestContext) -> None: ...

    def batch_started(self, batch: Sequence[RequestContext]) -> None: ...

    def batch_finished(
        self, batch: Sequence[RequestContext], seconds: float, error: BaseException | None
    ) -> None: ...

    def request_finished(self, request: RequestContext, outcome: str, seconds: float) -> None:
        """``outcome`` is "ok" or an error code (decode, validation, model, deadline...)."""

    def requests_finished(
        self, requests: Sequence[RequestContext], outcomes: Sequence[str], now: float
    ) -> None:
        """``request_finished`` for several requests at once (a Kafka batch); ``now`` is the
        ``time.monotonic()`` they finished at. Override it to take a lock once per batch."""
        for request, outcome in zip(requests, outcomes, strict=True):
            self.request_finished(request, outcome, now - request.received_at)

    def inject(self, request: RequestContext, carrier: Carrier) -> None:
        """Add propagation headers (traceparent) to an outgoing reply or dead letter."""

    def dead_lettered(
        self, request: RequestContext | None, topic: str, error: BaseException
    ) -> None: ...

    def send_failed(self, topic: str, error: BaseException) -> None: ...

    def committed(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        """(topic, partition, next offset) triples that were committed."""

    def lag(self, topic: str, partition: int, lag: int) -> None: ...

    def paused(self, paused: bool) -> None:
        """Intake paused (True) or resumed (False) for backpressure."""


class HookChain(StageHooks):
    """Fans every call out to several hooks; one failing hook does not stop the others.

    Each hook method of a chain is put together once, from only the hooks that override it:
    a chain of mostly no-op hooks costs close to nothing on the hot path (a stage handles tens
    of thousands of messages a second).
    """

    def __init__(self, hooks: Sequence[StageHooks]) -> None:
        self.hooks = tuple(hooks)
        fan_out_hooks(self, self.hooks, StageHooks)


def fan_out_hooks(chain: object, hooks: Sequence[object], base: type) -> None:
    """Give ``chain`` each public method of ``base``, calling in turn the hooks that override
    it and are enabled (a hook that raises is skipped). Shared by every hook chain.

    A batched method (``requests_finished``) also reaches the hooks that override only its
    one-request form: the base class's batched method calls that form for each request.
    """
    batched = getattr(base, "BATCHED", {})
    for name in _public_methods(base):
        forms = (name, batched[name]) if name in batched else (name,)
        calls = tuple(
            getattr(hook, name)
            for hook in hooks
            if getattr(hook, "enabled", True)  # e.g. tracing with no SDK configured
            and any(getattr(type(hook), form) is not getattr(base, form) for form in forms)
        )
        setattr(chain, name, _fan_out(calls))  # shadows the base class's no-op method


def _public_methods(base: type) -> tuple[str, ...]:
    return tuple(n for n, v in vars(base).items() if callable(v) and not n.startswith("_"))


def _fan_out(calls: tuple[Callable[..., None], ...]) -> Callable[..., None]:
    if not calls:
        return _ignore

    def call_each(*args: Any) -> None:
        for call in calls:
            try:
                call(*args)
            except Exception:  # noqa: S112  # telemetry must never break processing
                continue

    return call_each


def _ignore(*_args: Any) -> None:
    """No hook of the chain observes this."""
