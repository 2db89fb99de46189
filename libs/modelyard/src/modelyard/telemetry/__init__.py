"""Observability for modelyard: one hook seam, with tracing, metrics and logging behind it.

A stage and the router only call ``Hooks``; entry points call ``configure_logging`` and
``configure_tracing`` once and serve metrics with ``start_http_server``.
"""

from modelyard.telemetry.hooks import HookChain, Hooks, RequestContext, RoutedHop, RoutedRequest
from modelyard.telemetry.logging import (
    LoggingHooks,
    RouteLoggingHooks,
    configure_logging,
    configure_logging_from_env,
)
from modelyard.telemetry.metrics import (
    MetricsHooks,
    RouteMetricsHooks,
    count_receive_failures,
    start_http_server,
    stop_http_server,
)
from modelyard.telemetry.tracing import (
    RouteTracingHooks,
    TracingHooks,
    configure_tracing,
    extract,
    inject_current,
)

__all__ = [
    "HookChain",
    "Hooks",
    "LoggingHooks",
    "MetricsHooks",
    "RequestContext",
    "RouteLoggingHooks",
    "RouteMetricsHooks",
    "RouteTracingHooks",
    "RoutedHop",
    "RoutedRequest",
    "TracingHooks",
    "configure_logging",
    "configure_logging_from_env",
    "configure_tracing",
    "count_receive_failures",
    "extract",
    "inject_current",
    "start_http_server",
    "stop_http_server",
]
