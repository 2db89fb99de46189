"""The one observability seam: the stage loop and gRPC adapter call these hooks, nothing else.

Tracing, metrics and logging each implement ``StageHooks`` and are combined with ``HookChain``;
none of them is edited into the loop. A hook that raises is logged and ignored: telemetry never
breaks processing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["HookChain", "RequestContext", "StageHooks"]

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

    def request_received(self, request: RequestContext) -> None: ...

    def batch_started(self, batch: Sequence[RequestContext]) -> None: ...

    def batch_finished(
        self, batch: Sequence[RequestContext], seconds: float, error: BaseException | None
    ) -> None: ...

    def request_finished(self, request: RequestContext, outcome: str, seconds: float) -> None:
        """``outcome`` is "ok" or an error code (decode, validation, model, deadline...)."""

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

    Only hooks that override a method are called for it, so a chain of mostly no-op hooks costs
    close to nothing on the hot path (a stage handles tens of thousands of messages a second).
    """

    def __init__(self, hooks: Sequence[StageHooks]) -> None:
        self.hooks = tuple(hooks)
        self._calls: dict[str, tuple[Callable[..., None], ...]] = {
            name: tuple(
                getattr(hook, name)
                for hook in self.hooks
                if getattr(hook, "enabled", True)  # e.g. tracing with no SDK configured
                and getattr(type(hook), name) is not getattr(StageHooks, name)
            )
            for name in _HOOK_NAMES
        }

    def _each(self, name: str, *args: Any) -> None:
        for call in self._calls[name]:
            try:
                call(*args)
            except Exception:  # noqa: S112  # telemetry must never break processing
                continue

    def request_received(self, request: RequestContext) -> None:
        self._each("request_received", request)

    def batch_started(self, batch: Sequence[RequestContext]) -> None:
        self._each("batch_started", batch)

    def batch_finished(
        self, batch: Sequence[RequestContext], seconds: float, error: BaseException | None
    ) -> None:
        self._each("batch_finished", batch, seconds, error)

    def request_finished(self, request: RequestContext, outcome: str, seconds: float) -> None:
        self._each("request_finished", request, outcome, seconds)

    def inject(self, request: RequestContext, carrier: Carrier) -> None:
        self._each("inject", request, carrier)

    def dead_lettered(
        self, request: RequestContext | None, topic: str, error: BaseException
    ) -> None:
        self._each("dead_lettered", request, topic, error)

    def send_failed(self, topic: str, error: BaseException) -> None:
        self._each("send_failed", topic, error)

    def committed(self, offsets: Sequence[tuple[str, int, int]]) -> None:
        self._each("committed", offsets)

    def lag(self, topic: str, partition: int, lag: int) -> None:
        self._each("lag", topic, partition, lag)

    def paused(self, paused: bool) -> None:
        self._each("paused", paused)


_HOOK_NAMES = tuple(
    name for name, value in vars(StageHooks).items() if callable(value) and not name.startswith("_")
)
