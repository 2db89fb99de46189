"""`modelyard monitor`: windowed SLOs per model version over the audit topic; `monitor show`."""

from __future__ import annotations

import os
from typing import Any

import click

__all__ = ["monitor_group"]

_BOOTSTRAP = click.option("--bootstrap", envvar="MODELYARD_BOOTSTRAP", default="127.0.0.1:9092",
                          show_default=True, help="Kafka bootstrap servers.")  # fmt: skip
_PREFIX = click.option("--topic-prefix", envvar="MODELYARD_TOPIC_PREFIX", default="yard",
                       show_default=True)  # fmt: skip


@click.group("monitor", invoke_without_command=True)
@_BOOTSTRAP
@_PREFIX
@click.option("--window-s", type=float, default=60.0, show_default=True,
              help="Tumbling window size.")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--metrics-port", type=int, default=0, show_default=True, help="0: any free port.")
@click.pass_context
def monitor_group(ctx: click.Context, /, **options: Any) -> None:
    """Window the audit topic per (pipeline, stage, model, version, role).

    A faust-streaming app in consumer group <prefix>.g.monitor (run several to share the
    partitions): requests, errors by code, latency p50/p95/p99 (DDSketch, 1 % relative error)
    and shadow agreement per tumbling window, published as JSON to <prefix>.monitor and as
    Prometheus gauges on /metrics. See docs/monitor.md.
    """
    if ctx.invoked_subcommand is None:
        _run(options)


def _run(options: dict[str, Any]) -> None:
    from faust.worker import Worker  # noqa: PLC0415  # keeps --help fast
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from modelyard.broker.admin import create_topics, partition_counts  # noqa: PLC0415
    from modelyard.kafka.process import announce_ready  # noqa: PLC0415
    from modelyard.monitor.app import MonitorApp  # noqa: PLC0415
    from modelyard.monitor.metrics import MonitorMetrics  # noqa: PLC0415
    from modelyard.monitor.settings import MonitorSettings, monitor_topic  # noqa: PLC0415
    from modelyard.telemetry import (  # noqa: PLC0415
        configure_logging_from_env,
        start_http_server,
        stop_http_server,
    )
    from modelyard.topics import audit_topic  # noqa: PLC0415

    configure_logging_from_env()
    settings = MonitorSettings(
        bootstrap=options["bootstrap"], topic_prefix=options["topic_prefix"],
        window_s=options["window_s"], metrics_host=options["metrics_host"],
        metrics_port=options["metrics_port"],
    )  # fmt: skip
    prefix, extra = settings.topic_prefix, settings.kafka_extra()
    audit = audit_topic(prefix)
    partitions = partition_counts(settings.bootstrap, [audit], extra)[audit]
    if not partitions:
        raise click.ClickException(f"topic {audit} does not exist (start the routers first)")
    create_topics(settings.bootstrap, [monitor_topic(prefix)], partitions=1, kafka=extra)
    registry = CollectorRegistry()
    state: dict[str, bool] = {"ready": False}
    http, port = start_http_server(settings.metrics_host, settings.metrics_port, registry,
                                   lambda: dict(state))  # fmt: skip

    def ready() -> None:
        state["ready"] = True
        announce_ready("monitor", group=f"{prefix}.g.monitor", audit=audit,
                       metrics=f"{settings.metrics_host}:{port}")  # fmt: skip

    monitor = MonitorApp(settings, partitions, MonitorMetrics(registry), on_ready=ready)
    level = os.environ.get("MODELYARD_LOG_LEVEL", "WARNING")
    worker = Worker(monitor.app, loglevel=level, quiet=True, redirect_stdouts=False,
                    override_logging=False)  # fmt: skip
    try:
        worker.execute_from_commandline()
    finally:
        stop_http_server(http)


@monitor_group.command("show")
@click.argument("pipeline")
@_BOOTSTRAP
@_PREFIX
@click.option("--last", type=click.IntRange(min=1), default=10, show_default=True,
              help="Windows per stage and version (the sparklines' length).")  # fmt: skip
def show_command(pipeline: str, bootstrap: str, topic_prefix: str, last: int) -> None:
    """Print the last windows of PIPELINE per stage and version, from <prefix>.monitor."""
    from modelyard.monitor.settings import monitor_topic  # noqa: PLC0415
    from modelyard.monitor.show import read_summaries, render  # noqa: PLC0415

    click.echo(render(list(read_summaries(bootstrap, monitor_topic(topic_prefix))), pipeline, last))
