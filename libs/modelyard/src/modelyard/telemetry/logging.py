"""structlog set-up for entry points, and the hooks that log one summary line per request (a
stage's and the router's).

Libraries only call ``structlog.get_logger``; ``configure_logging`` (entry points only) picks
JSON for services or a console renderer on a TTY, merges contextvars (request id, model,
version bound by the stage), stamps ISO UTC times, and routes stdlib logging through the same
renderer so librdkafka/grpc/OTel warnings land in the same stream.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import structlog
from structlog.typing import Processor

from modelyard.telemetry.hooks import Hooks, RequestContext, RoutedRequest
from modelyard.telemetry.tracing import SPAN_KEY

__all__ = ["LoggingHooks", "RouteLoggingHooks", "configure_logging", "configure_logging_from_env"]

_HANDLER_NAME = "modelyard"  # marks our root handler so a second configure replaces it


def configure_logging_from_env() -> None:
    """``configure_logging`` as ``MODELYARD_LOG_JSON`` and ``MODELYARD_LOG_LEVEL`` say (what
    `modelyard up` gives its children), for commands whose settings hold no log fields."""
    as_json = os.environ.get("MODELYARD_LOG_JSON")
    json = None if as_json is None else as_json.strip().lower() in ("1", "true", "yes")
    configure_logging(json=json, level=os.environ.get("MODELYARD_LOG_LEVEL", "INFO"))


def configure_logging(*, json: bool | None = None, level: str = "INFO") -> None:
    """Configure structlog and stdlib logging for a process; ``json=None`` picks JSON unless
    stderr is a TTY. Logs go to stderr (stdout carries the machine-readable ready line)."""
    if json is None:
        json = not sys.stderr.isatty()
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared = _shared_processors()
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())  # no escapes in files
    )
    tail: list[Processor] = [structlog.processors.dict_tracebacks] if json else []
    structlog.configure(
        processors=[*shared, *tail, renderer],
        # filtering at the bound logger makes a disabled debug() call nearly free
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_stdlib(shared, [*tail, renderer], numeric)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _route_stdlib(shared: list[Processor], render: list[Processor], level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class LoggingHooks(Hooks):
    """One summary line per request (DEBUG when ok, WARNING on error), dead letters, pauses.

    ``model``/``version`` are optional: a stage process binds them as contextvars already.
    """

    def __init__(self, model: str | None = None, version: str | None = None) -> None:
        self._static = {k: v for k, v in (("model", model), ("version", version)) if v}

    @functools.cached_property
    def _log(self) -> Any:
        # bound on first use (after the entry point configured logging), not per call: a
        # filtered-out debug() on a bound logger is ~10x cheaper than through the lazy proxy
        return structlog.get_logger("modelyard.stage").bind(**self._static)

    @functools.cached_property
    def _debug(self) -> bool:
        return bool(self._log.is_enabled_for(logging.DEBUG))

    def request_finished(self, request: RequestContext, outcome: str, seconds: float) -> None:
        # ok is DEBUG: at ~30k msg/s an INFO line per message would drown everything else
        if outcome == "ok" and not self._debug:
            return  # skip building the event too, not just rendering it
        emit = self._log.debug if outcome == "ok" else self._log.warning
        emit(
            "request finished",
            request_id=request.request_id,
            trace_id=_trace_id(request),
            transport=request.transport,
            outcome=outcome,
            latency_ms=round(seconds * 1e3, 3),
        )

    def requests_finished(
        self, requests: Sequence[RequestContext], outcomes: Sequence[str], now: float
    ) -> None:
        if self._debug or any(outcome != "ok" for outcome in outcomes):
            super().requests_finished(requests, outcomes, now)

    def batch_finished(
        self, batch: Sequence[RequestContext], seconds: float, error: BaseException | None
    ) -> None:
        if error is not None:
            self._log.warning("batch failed", batch_size=len(batch), error=repr(error))

    def dead_lettered(
        self, request: RequestContext | None, topic: str, error: BaseException
    ) -> None:
        self._log.warning(
            "dead lettered",
            request_id=request.request_id if request else None,
            trace_id=_trace_id(request) if request else None,
            topic=topic,
            error=str(error),
            error_code=getattr(error, "code", type(error).__name__),
        )

    def send_failed(self, topic: str, error: BaseException) -> None:
        self._log.error("send failed", topic=topic, error=str(error))

    def paused(self, paused: bool) -> None:
        self._log.info("intake paused" if paused else "intake resumed")


def _trace_id(request: RequestContext) -> str | None:
    span = request.scratch.get(SPAN_KEY)
    if span is None:
        return None
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


_router_log = structlog.get_logger("modelyard.router")


class RouteLoggingHooks(Hooks):
    """One line per routed request: failures at warning level, the rest at debug."""

    def __init__(self) -> None:
        # decided once: at thousands of requests a second, building a dropped event costs
        self._debug = bool(_router_log.is_enabled_for(logging.DEBUG))

    def route_finished(self, request: RoutedRequest, outcome: str) -> None:
        error = request.error
        if error is None and not self._debug:
            return
        fields = {
            "request_id": request.request_id,
            "trace_id": request.trace_id,
            "outcome": outcome,
            "ms": round((time.monotonic() - request.started) * 1000, 2),
            "served_by": dict(request.served_by),
        }
        if error is not None:
            _router_log.warning("request failed", error=error[0], stage=error[1], **fields)
        else:
            _router_log.debug("request routed", **fields)

    def dropped(self, reason: str) -> None:
        if self._debug:
            _router_log.debug("message dropped", reason=reason)
