"""Observability for modelyard: one hook seam, with tracing, metrics and logging behind it.

Libraries and the stage loop only call ``StageHooks``; entry points call ``configure_logging``
and ``configure_tracing`` once and serve metrics with ``start_http_server``.
"""

from modelyard.telemetry.hooks import HookChain, RequestContext, StageHooks
from modelyard.telemetry.logging import LoggingHooks, configure_logging
from modelyard.telemetry.metrics import (
    MetricsHooks,
    count_receive_failures,
    start_http_server,
    stop_http_server,
)
from modelyard.telemetry.tracing import TracingHooks, configure_tracing, extract, inject_current

__all__ = [
    "HookChain",
    "LoggingHooks",
    "MetricsHooks",
    "RequestContext",
    "StageHooks",
    "TracingHooks",
    "configure_logging",
    "configure_tracing",
    "count_receive_failures",
    "extract",
    "inject_current",
    "start_http_server",
    "stop_http_server",
]
