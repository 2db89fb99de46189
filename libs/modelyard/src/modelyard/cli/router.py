"""`modelyard router`: walk a pipeline's requests through its stages over Kafka."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from modelyard.cli.auth_options import router_auth_options
from modelyard.cli.tls_options import grpc_tls_options

__all__ = ["router_command"]


@click.command("router")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--repository", type=click.Path(path_type=Path), help="Model repository [models].")
@click.option("--bootstrap", help="Kafka bootstrap servers [127.0.0.1:9092].")
@click.option("--topic-prefix", help="Prefix of modelyard topics [yard].")
@click.option("--partitions", type=int, help="Partitions of pipeline topics it creates [4].")
@click.option("--grpc-host", help="gRPC bind address [127.0.0.1].")
@click.option("--grpc-port", type=int, help="gRPC port, 0 for any free port [8000].")
@grpc_tls_options
@router_auth_options
@click.option("--no-grpc", "no_grpc", is_flag=True, help="Kafka only: no gRPC API.")
@click.option("--metrics-host", help="Metrics/health HTTP bind address [127.0.0.1].")
@click.option("--metrics-port", type=int, help="Metrics/health HTTP port, 0 for any [9200].")
@click.option("--default-timeout-s", type=float, help="Deadline of requests without one [30].")
@click.option(
    "--max-timeout-s", type=float, help="Latest deadline a request may ask for, in s [600]."
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Partition claims that end crash loops [~/.local/state/modelyard].",
)
@click.option(
    "--canary-key", type=click.Choice(["caller", "request"]), help="Sticky canary key [caller]."
)
@click.option("--no-contract-check", "no_check", is_flag=True, help="Skip the start-up check.")
@click.option(
    "--keyring",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Operator keyring every control record is verified against (required).",
)
@click.option(
    "--insecure-control",
    "insecure",
    is_flag=True,
    help="No keyring: apply control records unverified (development only).",
)
@click.option(
    "--writer-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Writer key: signs audit checkpoints and guard rollbacks.",
)
@click.option("--checkpoint-every", type=int, help="Audit records per checkpoint [1000].")
@click.option("--checkpoint-every-s", type=float, help="Seconds between checkpoints [5].")
@click.option(
    "--exactly-once",
    "exactly_once",
    is_flag=True,
    help="Commit results, audit records, dispatches and consumed offsets in one Kafka "
    "transaction: no duplicate results after a crash (needs broker transactions; "
    "docs/delivery.md).",
)
@click.option(
    "--transactional-id",
    help="With --exactly-once: this instance's id, stable across restarts "
    "[<group>.<host>.<state-dir digest>.<slot>].",
)
def router_command(
    spec: Path,
    no_grpc: bool,
    no_check: bool,
    insecure: bool,
    exactly_once: bool,
    **options: Any,
) -> None:
    """Route the pipeline SPEC (a YAML file, e.g. pipelines/docs.yaml).

    Consumes yard.p.<pipeline>.in (requests) and yard.p.<pipeline>.router (stage replies) in the
    group yard.g.p.<pipeline>.router, so several routers share the work; dispatches each stage
    to the version the control topic names (canary and shadow included), writes one result per
    request to yard.p.<pipeline>.out (and the request's reply-to), hop and request records to
    yard.audit, shadow replies to yard.p.<pipeline>.shadow. Serves the pipeline gRPC API and
    /metrics, /healthz/{live,ready}. Every option is also MODELYARD_<NAME>; tracing follows the
    standard OTEL_* variables. SIGTERM stops intake, lets requests in flight finish, commits.
    --auth (default none: every caller anonymous) authenticates gRPC callers, refuses and audits
    the rest; the gateway signs what it forwards with its --callers-file key (docs/security.md).
    Control records apply only when signed by a --keyring key allowed the pipeline; others are
    ignored and reported (docs/control-plane.md). Audit records are hash-chained per writer and
    partition; --writer-key signs the chains' checkpoints (docs/audit.md). Delivery is at least
    once: a crash's duplicate results are kept few by de-duplication (request ids in flight,
    finished here, or read back from the results topic's tail); --exactly-once commits each
    result with its request's offset in one transaction instead (docs/delivery.md).
    """
    from modelyard.router.app import run_router  # noqa: PLC0415  # keeps `--help` fast
    from modelyard.router.settings import RouterSettings  # noqa: PLC0415
    from modelyard.telemetry import configure_logging, configure_tracing  # noqa: PLC0415

    given = {k: v for k, v in options.items() if v is not None}
    if no_grpc:
        given["grpc_enabled"] = False
    if no_check:
        given["check_contract"] = False
    if insecure:
        given["insecure_control"] = True
    if exactly_once:
        given["exactly_once"] = True
    settings = RouterSettings(spec=spec, **given)
    configure_logging(json=settings.log_json, level=settings.log_level)
    provider = configure_tracing("modelyard-router")
    try:
        code = asyncio.run(run_router(settings))
    finally:
        if provider is not None:
            provider.shutdown()
    sys.exit(code)
