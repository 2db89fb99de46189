"""Composition of one router process: control follower, Kafka router, gRPC API, HTTP endpoints.

This is the only place that knows all the router's parts.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge

from modelyard.audit.chain import AuditChain
from modelyard.audit.writer import writer_id
from modelyard.broker import ensure_pipeline_topics
from modelyard.control import CanaryChange
from modelyard.control.deploy import check_routing, record_check
from modelyard.control.follower import ControlFollower
from modelyard.control.topic import ensure_control_topic, write_change
from modelyard.control.verify import ControlVerifier
from modelyard.errors import ConfigError
from modelyard.graph.load import load_spec
from modelyard.graph.spec import PipelineSpec
from modelyard.kafka.process import announce_ready, install_stop_signals, wait_for_stop
from modelyard.keys import SigningKey
from modelyard.repository.store import ModelRepository
from modelyard.router.guards import GuardHook, Trip
from modelyard.router.recall import AnsweredRecall
from modelyard.router.service import PipelineRouter, RouterOptions
from modelyard.router.settings import RouterSettings
from modelyard.telemetry import (
    HookChain,
    RouteLoggingHooks,
    RouteMetricsHooks,
    RouteTracingHooks,
    count_receive_failures,
    start_http_server,
    stop_http_server,
)
from modelyard.topics import pipeline_results_topic

__all__ = ["run_router"]

log = structlog.get_logger("modelyard.router")


async def run_router(settings: RouterSettings, stop: asyncio.Event | None = None) -> int:
    """Route until SIGTERM/SIGINT (or ``stop``); drain, commit, exit. Returns the exit code."""
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    spec = load_spec(settings.spec)
    structlog.contextvars.bind_contextvars(pipeline=spec.pipeline)
    kafka = settings.kafka_extra()
    await asyncio.to_thread(
        ensure_pipeline_topics,
        settings.bootstrap, settings.topic_prefix, spec.pipeline, settings.partitions, kafka,
    )  # fmt: skip
    await asyncio.to_thread(
        ensure_control_topic, settings.bootstrap, settings.topic_prefix, kafka=kafka
    )
    registry = CollectorRegistry()
    verifier = _control_verifier(settings, spec)
    follower = ControlFollower(
        settings.bootstrap, prefix=settings.topic_prefix, kafka=kafka, verifier=verifier,
        registry=registry,
    )  # fmt: skip
    follower.start()
    try:
        return await _serve(settings, spec, follower, verifier, registry=registry, stop=stop)
    finally:
        follower.stop()


def _control_verifier(settings: RouterSettings, spec: PipelineSpec) -> ControlVerifier:
    """What every control record must pass before it routes anything: a signature by a key of
    the keyring allowed this pipeline, and a change the spec and repository can serve."""
    checks = {}
    if settings.check_contract:
        checks[spec.pipeline] = record_check(spec, ModelRepository(settings.repository))
    if settings.keyring is not None:
        return ControlVerifier.from_file(settings.keyring, checks)
    if not settings.insecure_control:
        raise ConfigError(
            "no keyring: give --keyring (MODELYARD_KEYRING) so control records are verified, "
            "or --insecure-control to apply them unverified (development only)"
        )
    return ControlVerifier(None, checks)


async def _serve(
    settings: RouterSettings,
    spec: PipelineSpec,
    follower: ControlFollower,
    verifier: ControlVerifier,
    *,
    registry: CollectorRegistry,
    stop: asyncio.Event,
) -> int:
    if not await asyncio.to_thread(follower.wait_caught_up, 30):
        raise ConfigError("could not read the control topic within 30 s")
    if settings.check_contract:
        routing = follower.state.pipeline(spec.pipeline)
        check_routing(spec, ModelRepository(settings.repository), routing)
    writer_key = SigningKey.load(settings.writer_key) if settings.writer_key else None
    seq = Gauge(
        "modelyard_router_control_seq",
        "Sequence number of the pipeline's routing this router applies (see modelyard status).",
        ["pipeline"],
        registry=registry,
    )
    seq.labels(spec.pipeline).set_function(lambda: follower.state.pipeline(spec.pipeline).seq)
    clearer = _canary_clearer(settings, spec, writer_key, verifier)
    guard = GuardHook(spec.pipeline, lambda: follower.state, clearer, registry)
    hooks = HookChain(
        [RouteTracingHooks(), RouteMetricsHooks(registry), RouteLoggingHooks(), guard]
    )
    options = _options(settings, writer_key)
    router = PipelineRouter(spec, follower, options, hooks, recall=_recall(settings, spec))
    count_receive_failures(registry, lambda: router.fetch_health.failures)
    _tune_gc()
    router.start()
    http, metrics_port = start_http_server(
        settings.metrics_host, settings.metrics_port, registry, _health(router, follower)
    )
    grpc_server, gateway, grpc_port = await _start_grpc(settings, spec, writer_key)
    try:
        if not await asyncio.to_thread(router.wait_joined, 60):
            log.warning("router has not joined its group yet; announcing anyway")
        _announce(spec.pipeline, settings, grpc_port, metrics_port)
        failed = await wait_for_stop(stop, [router])
        log.info("stopping", reason="router failure" if failed else "signal")
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=5.0)
            await gateway.close()
        await asyncio.to_thread(router.stop)
        await asyncio.to_thread(guard.join)
        stop_http_server(http)
    log.info("stopped", clean=router.failure is None)
    return 1 if router.failure is not None else 0


def _tune_gc() -> None:
    """As a stage does (``stage/service.py``): what is loaded by now lives as long as the
    process, so it is frozen out of full collections; a larger first generation lets a batch's
    short-lived objects (envelopes, records, hops) die before the collector walks them."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _canary_clearer(
    settings: RouterSettings,
    spec: PipelineSpec,
    writer_key: SigningKey | None,
    verifier: ControlVerifier,
) -> Callable[[Trip], None]:
    """How a tripped guard rolls its canary back: one control record, signed by the router's
    writer key (the keyring lets a writer sign only such retreats)."""
    if writer_key is None:
        log.warning("no writer key: a tripped guard cannot roll its canary back")

    def clear(trip: Trip) -> None:
        if writer_key is None:
            log.error("guard tripped; no writer key to sign the rollback", reason=trip.reason)
            return
        write_change(
            settings.bootstrap, spec.pipeline, CanaryChange(stage=trip.stage, version=None),
            signer=writer_key, verifier=verifier, reason=trip.reason,
            prefix=settings.topic_prefix, kafka=settings.kafka_extra(),
        )  # fmt: skip

    return clear


def _options(settings: RouterSettings, writer_key: SigningKey | None) -> RouterOptions:
    options = RouterOptions(
        bootstrap=settings.bootstrap,
        prefix=settings.topic_prefix,
        default_timeout_s=settings.default_timeout_s,
        max_timeout_s=settings.max_timeout_s,
        canary_key=settings.canary_key,
        max_inflight=settings.max_inflight,
        drain_timeout_s=settings.drain_timeout_s,
        kafka=settings.kafka_extra(),
        state_dir=settings.state_dir,
        writer_key=writer_key,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_every_s=settings.checkpoint_every_s,
        callers=settings.caller_keys() if settings.auth != "none" else None,
        exactly_once=settings.exactly_once,
        transactional_id=settings.transactional_id,
        stuck_commit_s=settings.stuck_commit_s,
    )
    if settings.exactly_once:  # each commit is a transaction its results wait for
        options = replace(options, commit_interval_s=settings.transaction_interval_s)
    return options


def _recall(settings: RouterSettings, spec: PipelineSpec) -> Callable[[], list[str]] | None:
    """At least once: the request ids the results topic holds lately (``router/recall.py``)."""
    if settings.exactly_once or settings.recall_results == 0:
        return None
    results = pipeline_results_topic(settings.topic_prefix, spec.pipeline)
    recall = AnsweredRecall(
        settings.bootstrap, results, settings.recall_results, settings.kafka_extra()
    )
    return recall.recall


def _health(router: PipelineRouter, follower: ControlFollower) -> Any:
    def checks() -> dict[str, bool]:
        return {**router.health(), "control": follower.caught_up and follower.failure is None}

    return checks


async def _start_grpc(
    settings: RouterSettings, spec: PipelineSpec, writer_key: SigningKey | None
) -> tuple[Any, Any, int | None]:
    if not settings.grpc_enabled:
        return None, None, None
    # imported here so a Kafka-only router never loads grpc
    from modelyard.gateway.core import PipelineGateway  # noqa: PLC0415
    from modelyard.gateway.server import start_pipeline_grpc  # noqa: PLC0415

    # before anything starts: a bad file stops here
    credentials = settings.grpc_credentials()
    auth = settings.authenticator()
    signing_key = settings.gateway_key(settings.caller_keys())
    if auth.enabled and signing_key is None:  # the router would refuse what it forwards
        raise ConfigError(
            f"auth {settings.auth} needs a may_act_for key in the callers file for the gRPC "
            "gateway (modelyard callers add router --pipelines '*' --may-act-for)"
        )
    gateway = PipelineGateway(
        settings.bootstrap,
        topic_prefix=settings.topic_prefix,
        kafka=settings.kafka_extra(),
        default_timeout_s=settings.default_timeout_s,
        signing_key=signing_key,
        # a writer of its own (refused calls): one producer's records stay in chain order
        audit_chain=AuditChain(writer_id(f"gateway.{spec.pipeline}"), writer_key),
    )
    await gateway.start()
    server, port = await start_pipeline_grpc(
        gateway, settings.grpc_host, settings.grpc_port, credentials, auth=auth
    )
    return server, gateway, port


def _announce(
    pipeline: str, settings: RouterSettings, grpc_port: int | None, metrics_port: int
) -> None:
    # the machine-readable line `modelyard up` and the tests wait for
    grpc = f"{settings.grpc_host}:{grpc_port}" if grpc_port else "off"
    metrics = f"{settings.metrics_host}:{metrics_port}"
    announce_ready("router", pipeline=pipeline, grpc=grpc, metrics=metrics)
