"""`modelyard serve`: run one model version as a Kafka consumer and an OIP v2 gRPC service."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import click

from modelyard.cli.auth_options import grpc_auth_options
from modelyard.cli.tls_options import grpc_tls_options

__all__ = ["serve_command"]


@click.command("serve")
@click.argument("model")
@click.option(
    "--repository", type=click.Path(path_type=Path), help="Model repository root [models]."
)
@click.option("--bootstrap", help="Kafka bootstrap servers [127.0.0.1:9092].")
@click.option("--grpc-host", help="gRPC bind address [127.0.0.1].")
@click.option("--grpc-port", type=int, help="gRPC port, 0 for any free port [8001].")
@click.option("--metrics-host", help="Metrics/health HTTP bind address [127.0.0.1].")
@click.option("--metrics-port", type=int, help="Metrics/health HTTP port, 0 for any [9100].")
@grpc_tls_options
@grpc_auth_options
@click.option("--no-kafka", "no_kafka", is_flag=True, help="gRPC only: serve without a broker.")
@click.option("--no-grpc", "no_grpc", is_flag=True, help="Kafka only: no gRPC server.")
@click.option("--input-topic", help="Topic to consume [yard.m.<model>.<version>].")
@click.option("--group", "group_id", help="Consumer group [yard.g.<model>.<version>].")
@click.option("--topic-prefix", help="Prefix of modelyard topics [yard].")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Partition claims that end crash loops [~/.local/state/modelyard].",
)
@click.option("--no-verify", "no_verify", is_flag=True, help="Skip artifact sha256 checks.")
@click.option(
    "--exactly-once",
    "exactly_once",
    is_flag=True,
    help="Commit replies and consumed offsets in one Kafka transaction: no duplicate replies "
    "after a crash (needs broker transactions; docs/delivery.md).",
)
@click.option(
    "--transactional-id",
    help="With --exactly-once: this instance's id, stable across restarts "
    "[<group>.<host>.<state-dir digest>.<slot>].",
)
def serve_command(
    model: str,
    no_kafka: bool,
    no_grpc: bool,
    no_verify: bool,
    exactly_once: bool,
    **options: Any,
) -> None:
    """Serve MODEL ('name' for its latest version, or 'name:version').

    Consumes the version's input topic in its own consumer group, micro-batches, replies to each
    request's reply-to topic and commits only after the replies are acknowledged (at least once;
    --exactly-once: replies and offsets in one transaction per commit); serves the same
    model over OIP v2 gRPC; exposes /metrics and /healthz/{live,ready} over HTTP. Every option can
    also be set as MODELYARD_<NAME>; tracing follows the standard OTEL_* variables. SIGTERM drains
    in-flight work, commits and exits. --auth (default none: every caller anonymous)
    authenticates gRPC callers and checks the tokens file's models (docs/security.md).
    """
    # one BLAS/ORT thread per process: stages share cores, and oversubscription is ruinous
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from modelyard.stage.service import run_stage  # noqa: PLC0415  # after the env is set
    from modelyard.stage.settings import StageSettings  # noqa: PLC0415
    from modelyard.telemetry import configure_logging, configure_tracing  # noqa: PLC0415

    given = {k: v for k, v in options.items() if v is not None}
    if no_kafka:
        given["kafka_enabled"] = False
    if no_grpc:
        given["grpc_enabled"] = False
    if no_verify:
        given["verify_artifacts"] = False
    if exactly_once:
        given["exactly_once"] = True
    settings = StageSettings(model=model, **given)
    configure_logging(json=settings.log_json, level=settings.log_level)
    provider = configure_tracing(f"modelyard-{model.replace(':', '-')}")
    try:
        code = asyncio.run(run_stage(settings))
    finally:
        if provider is not None:
            provider.shutdown()
    sys.exit(code)
