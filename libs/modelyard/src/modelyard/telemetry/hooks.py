"""The one observability seam: a stage (its Kafka and gRPC adapters, its batcher) and the router
call these hooks, nothing else.

Tracing, metrics and logging each implement ``Hooks`` and are combined with ``HookChain``; none
of them is edited into a loop. A hook that raises is ignored: telemetry never breaks processing.
The router's requests and hops reach hooks as :class:`RoutedRequest` and :class:`RoutedHop`
views, so this package depends on nothing above it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

__all__ = [
    "Carrier",
    "HookChain",
    "Hooks",
    "RequestContext",
    "RoutedHop",
    "RoutedRequest",
    "fan_out_hooks",
]

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


class RoutedRequest(Protocol):
    """A request the router is walking through a pipeline, as hooks see it."""

    @property
    def pipeline(self) -> str: ...
    @property
    def request_id(self) -> str: ...
    @property
    def caller(self) -> str | None: ...
    @property
    def headers(self) -> Carrier:
        """The ingress message's headers (the producer's trace context)."""

    @property
    def served_by(self) -> Mapping[str, str]:
        """Stage -> ``model:version`` of every stage dispatched so far."""

    @property
    def error(self) -> tuple[str, str | None] | None:
        """(message, stage) of the failure that ended the request, if one did."""

    started: float  # time.monotonic() at intake
    trace_id: str | None  # set by the tracing hook, read by the audit record
    scratch: dict[str, Any]  # per-hook state (the request span)


class RoutedHop(Protocol):
    """One dispatch of a routed request to a stage version, as hooks see it."""

    @property
    def pipeline(self) -> str: ...
    @property
    def request_id(self) -> str: ...
    @property
    def stage(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def role(self) -> str:
        """active, canary or shadow."""

    @property
    def shadow(self) -> bool: ...

    started: float  # time.monotonic() at dispatch
    scratch: dict[str, Any]  # per-hook state (the hop span, its span id for the audit record)


class Hooks:
    """Base class: every hook is a no-op. Override what you observe.

    A stage calls the request, batch and delivery hooks; the router calls the route and hop
    hooks (and ``dropped``). A hook implementation observes either or both.
    """

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

    # the router -------------------------------------------------------------------------
    def route_started(self, request: RoutedRequest) -> None:
        """The router took a request off its pipeline's ingress."""

    def hop_started(self, request: RoutedRequest | None, hop: RoutedHop, carrier: Carrier) -> None:
        """A dispatch is about to be produced; ``carrier`` are its headers (inject here).
        ``request`` is None for a shadow copy sent after its request finished."""

    def hop_finished(self, hop: RoutedHop, outcome: str) -> None:
        """A stage replied (``outcome`` "ok" or its error code), or "sent" for a shadow copy."""

    def route_finished(self, request: RoutedRequest, outcome: str) -> None:
        """The request's result was emitted (``outcome`` "ok" or the error code)."""

    def dropped(self, reason: str) -> None:
        """A message was ignored: a duplicate reply, a late reply, a redelivered request."""


class HookChain(Hooks):
    """Fans every call out to several hooks; one failing hook does not stop the others.

    Each hook method of a chain is put together once, from only the hooks that override it:
    a chain of mostly no-op hooks costs close to nothing on the hot path (a stage handles tens
    of thousands of messages a second).
    """

    def __init__(self, hooks: Sequence[Hooks]) -> None:
        self.hooks = tuple(hooks)
        fan_out_hooks(self, self.hooks, Hooks)


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
