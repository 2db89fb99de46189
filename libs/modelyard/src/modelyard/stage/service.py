"""Composition of one stage process: model, batcher, Kafka consumer, gRPC server, HTTP endpoints.

This is the only place that knows all the parts; each part knows only the core.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from modelyard.broker import create_topics
from modelyard.repository.store import ModelRepository
from modelyard.stage.batcher import Batcher, RetryPolicy
from modelyard.stage.core import StageCore
from modelyard.stage.kafka_adapter import ConsumerOptions, StageConsumer
from modelyard.stage.settings import StageSettings
from modelyard.telemetry import (
    HookChain,
    LoggingHooks,
    MetricsHooks,
    TracingHooks,
    count_receive_failures,
    start_http_server,
    stop_http_server,
)
from modelyard.topics import model_input_topic

__all__ = ["Endpoints", "run_stage"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Endpoints:
    grpc_port: int | None
    metrics_port: int
    topic: str | None


async def run_stage(settings: StageSettings, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop``); drain, commit, exit. Returns the exit code."""
    stop = stop or asyncio.Event()
    _install_signal_handlers(stop)
    model = ModelRepository(settings.repository).load(
        settings.model, verify=settings.verify_artifacts
    )
    manifest = model.manifest
    structlog.contextvars.bind_contextvars(model=manifest.name, version=manifest.version)
    topic = settings.input_topic or model_input_topic(
        settings.topic_prefix, manifest.name, manifest.version
    )
    registry = CollectorRegistry()
    hooks = HookChain(
        [
            TracingHooks(manifest.name, manifest.version, topic),
            MetricsHooks(manifest.name, manifest.version, registry),
            LoggingHooks(),
        ]
    )
    retry = RetryPolicy(settings.retry_attempts, settings.retry_backoff_ms / 1000)
    batcher = Batcher(model, manifest.batching, hooks, retry)
    batcher.start()
    core = StageCore(model, batcher, hooks)
    consumer = _start_consumer(settings, core, topic) if settings.kafka_enabled else None

    def health() -> dict[str, bool]:
        checks = {"model": model.ready()}
        if consumer is not None:
            checks["kafka"] = consumer.joined and consumer.running and consumer.failure is None
            checks["fetch"] = consumer.fetch_health.ok
        return checks

    if consumer is not None:
        count_receive_failures(registry, lambda: consumer.fetch_health.failures)
    http, metrics_port = start_http_server(
        settings.metrics_host, settings.metrics_port, registry, health
    )
    grpc_server, grpc_port = await _start_grpc(settings, core)
    if consumer is not None and not await asyncio.to_thread(consumer.wait_joined, 60):
        log.warning("consumer has not joined its group yet; announcing anyway", topic=topic)
    _tune_gc()
    _announce(Endpoints(grpc_port, metrics_port, topic if consumer else None), settings)
    failed = await _wait(stop, consumer)
    log.info("stopping", reason="consumer failure" if failed else "signal")
    if grpc_server is not None:
        await grpc_server.stop(grace=5.0)
    if consumer is not None:
        await asyncio.to_thread(consumer.stop)
    await asyncio.to_thread(batcher.stop, settings.drain_timeout_s)
    model.unload()
    stop_http_server(http)
    failure = consumer.failure if consumer is not None else None
    log.info("stopped", clean=failure is None)
    return 1 if failure is not None else 0


def _start_consumer(settings: StageSettings, core: StageCore, topic: str) -> StageConsumer:
    manifest = core.manifest
    options = ConsumerOptions(
        bootstrap=settings.bootstrap,
        topic=topic,
        group_id=settings.group_id
        or f"{settings.topic_prefix}.g.{manifest.name}.{manifest.version}",
        prefix=settings.topic_prefix,
        max_inflight=settings.max_inflight or manifest.batching.max_queue,
        drain_timeout_s=settings.drain_timeout_s,
        kafka=settings.kafka_extra(),
        state_dir=settings.state_dir,
    )
    # a consumer subscribed to a topic that does not exist yet may not see it for minutes
    create_topics(settings.bootstrap, [topic], partitions=settings.partitions)
    consumer = StageConsumer(core, options)
    consumer.start()
    return consumer


async def _start_grpc(settings: StageSettings, core: StageCore) -> tuple[Any, int | None]:
    if not settings.grpc_enabled:
        return None, None
    # imported here so a Kafka-only stage never loads grpc
    from modelyard.stage.grpc_adapter import start_grpc_server  # noqa: PLC0415

    return await start_grpc_server(
        core,
        host=settings.grpc_host,
        port=settings.grpc_port,
        credentials=settings.grpc_credentials(),
    )


async def _wait(stop: asyncio.Event, consumer: StageConsumer | None) -> bool:
    """Wait for a stop request; True when the consumer failed instead."""
    while not stop.is_set():
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        if consumer is not None and consumer.failure is not None:
            return True
    return False


def _tune_gc() -> None:
    """Collector settings for a process that allocates a few short-lived objects per message.

    Everything loaded by now (modules, model, clients) lives as long as the process: frozen, it
    is never walked again by a full collection. A larger first generation lets a batch's
    objects die before the collector looks at them, instead of being promoted and re-walked
    (measured on a burst: collections took 17 us per message before, 2 us after).
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError, RuntimeError):  # not on the main thread (tests)
            loop.add_signal_handler(sig, stop.set)


def _announce(endpoints: Endpoints, settings: StageSettings) -> None:
    # one machine-readable line on stdout: `modelyard up` and the tests wait for it
    grpc = f"{settings.grpc_host}:{endpoints.grpc_port}" if endpoints.grpc_port else "off"
    line = (
        f"modelyard stage ready model={settings.model} grpc={grpc} "
        f"metrics={settings.metrics_host}:{endpoints.metrics_port} topic={endpoints.topic or 'off'}"
    )
    # one write, newline included: print() writes the end separately, and a log line from
    # another thread could land in between when stdout and stderr share a pipe
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    log.info("stage ready", grpc=grpc, metrics_port=endpoints.metrics_port, topic=endpoints.topic)
