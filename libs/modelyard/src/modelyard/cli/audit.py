"""``modelyard audit migrate|query|verify|prove`` and ``modelyard audit-sink``: the audit store."""

from __future__ import annotations

import base64
import csv
import json
import sys
from collections.abc import Iterable
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from modelyard.cli.dlq import parse_when
from modelyard.errors import ModelyardError

__all__ = ["UP_KEYRING", "UP_STORE", "audit_group", "audit_sink_command"]

_STORE_HELP = (
    "The audit store: sqlite:///PATH (or a file path) or postgresql://USER@HOST/DB "
    "[env MODELYARD_AUDIT_STORE]."
)
# what `modelyard up` writes by default (its state dir, relative to where it runs)
UP_STORE = Path(".modelyard/up/audit.db")
UP_KEYRING = Path(".modelyard/up/keyring.yaml")
_TABLE_COLUMNS = ("kind", "time", "request_id", "pipeline", "principal", "stage", "served",
                  "role", "outcome", "latency_ms", "chain")  # fmt: skip


def _store_option(f: Any) -> Any:
    return click.option(
        "--store", "store_url", envvar="MODELYARD_AUDIT_STORE", callback=_default_store,
        help=_STORE_HELP + f" Default: the store `modelyard up` writes, sqlite:///{UP_STORE}, "
        "when that file exists.",
    )(f)  # fmt: skip


def _default_store(_: click.Context, __: click.Parameter, value: str | None) -> str:
    if value:
        return value
    if UP_STORE.is_file():
        return f"sqlite:///{UP_STORE}"
    raise click.UsageError(
        f"no audit store: give --store (or MODELYARD_AUDIT_STORE), or run this where "
        f"`modelyard up` ran (it writes {UP_STORE})"
    )


def _keyring_option(f: Any) -> Any:
    return click.option(
        "--keyring", type=click.Path(dir_okay=False, path_type=Path), envvar="MODELYARD_KEYRING",
        default=UP_KEYRING, show_default=True,
        help="Keyring of the writer keys that sign checkpoints (default: the one `modelyard "
        "up` creates) [env MODELYARD_KEYRING].",
    )(f)  # fmt: skip


def _when(_: click.Context, __: click.Parameter, value: str | None) -> datetime | None:
    return None if value is None else parse_when(value)


@click.group("audit")
def audit_group() -> None:
    """Query, verify and prove the audit store that `modelyard audit-sink` writes."""


@audit_group.command("migrate")
@_store_option
def migrate_command(store_url: str) -> None:
    """Create the audit store's schema, or upgrade it to the newest version."""
    from modelyard.audit.store import migrate, redact_url  # noqa: PLC0415

    version = _run(lambda: migrate(store_url))
    click.echo(f"audit store {redact_url(store_url)} at schema version {version}")


@audit_group.command("query")
@_store_option
@click.option("--request-id", help="One request.")
@click.option("--principal", help="The authenticated caller.")
@click.option("--pipeline")
@click.option("--stage", help="Hops of this stage (hop filters return hops only).")
@click.option("--model", help="Hops that ran this model.")
@click.option("--version", "version_", metavar="VERSION", help="Hops that ran this version.")
@click.option("--role", type=click.Choice(["active", "canary", "shadow"]))
@click.option("--outcome", help='"ok", or an error code (deadline, model, unauthenticated...).')
@click.option("--since", callback=_when, help="From this time on: ISO 8601, or an age (15m, 2h).")
@click.option("--until", callback=_when, help="Before this time: ISO 8601, or an age.")
@click.option("--kind", type=click.Choice(["all", "request", "hop"]), default="all",
              show_default=True, help="Which records.")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--format", "output", type=click.Choice(["table", "jsonl", "csv"]),
              default="table", show_default=True)  # fmt: skip
def query_command(store_url: str, kind: str, output: str, version_: str | None,
                  **filters: Any) -> None:  # fmt: skip
    """Print the requests and hops that match every filter given, oldest first.

    A request row is one request from ingress to its result; a hop row is one stage
    execution (shadow copies included). jsonl prints every column, the captured result
    fields as base64 msgpack.
    """
    from modelyard.audit.store import Filters, open_store  # noqa: PLC0415

    kinds = ("request", "hop") if kind == "all" else (kind,)
    chosen = Filters(**filters, version=version_, kinds=kinds)  # type: ignore[arg-type]
    with _run(lambda: open_store(store_url)) as store:
        rows = store.query(chosen)
        {"table": _print_table, "jsonl": _print_jsonl, "csv": _print_csv}[output](rows)


@audit_group.command("verify")
@_store_option
@_keyring_option
def verify_command(store_url: str, keyring: Path) -> None:
    """Recompute every writer's hash chain from the stored records and check every checkpoint.

    Reports each edited, deleted, inserted or reordered row with its position (writer,
    partition, seq, table and row id), each checkpoint that does not verify against the
    keyring, and each chain's unsigned tail (records after its last checkpoint). Exits 1 when
    anything is wrong.
    """
    from modelyard.audit.store import open_store  # noqa: PLC0415
    from modelyard.audit.verify import verify_store  # noqa: PLC0415
    from modelyard.keys import Keyring  # noqa: PLC0415

    ring = _run(lambda: Keyring.load(keyring))
    with _run(lambda: open_store(store_url)) as store:
        report = verify_store(store, ring)
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 1)


@audit_group.command("prove")
@click.argument("request_id")
@_store_option
@_keyring_option
@click.option("--all-links", is_flag=True, help="List every link, not only the first ones.")
def prove_command(request_id: str, store_url: str, keyring: Path, all_links: bool) -> None:
    """Print the evidence that REQUEST_ID's records are in a signed chain.

    Its records with their chain positions and hashes, the links from them up to the next
    checkpoint, and that checkpoint's signature and whether it verifies. Exits 1 when the
    proof does not hold.
    """
    from modelyard.audit.prove import prove_request  # noqa: PLC0415
    from modelyard.audit.store import open_store  # noqa: PLC0415
    from modelyard.keys import Keyring  # noqa: PLC0415

    ring = _run(lambda: Keyring.load(keyring))
    with _run(lambda: open_store(store_url)) as store:
        proof = prove_request(store, ring, request_id, all_links=all_links)
    for line in proof.lines:
        click.echo(line)
    sys.exit(0 if proof.proven else 1)


@click.command("audit-sink")
@click.option("--store", "audit_store", help=_STORE_HELP)
@click.option("--bootstrap", help="Kafka bootstrap servers [127.0.0.1:9092].")
@click.option(
    "--topic-prefix", "--prefix", "topic_prefix", help="Prefix of modelyard topics [yard]."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Most records per store commit [2000]."
)
@click.option("--max-wait-s", type=click.FloatRange(min=0.001),
              help="Longest a record waits for its batch to be written [0.2].")  # fmt: skip
@click.option("--no-control", is_flag=True, help="Do not store the control topic's records.")
@click.option("--keyring", type=click.Path(dir_okay=False, path_type=Path),
              help="Operator keyring control records are verified against, as routers verify "
              "them [env MODELYARD_KEYRING; none: stored as unverified].")  # fmt: skip
@click.option("--metrics-host", help="Where /metrics and /healthz are served [127.0.0.1].")
@click.option("--metrics-port", type=int, help="0: any free port [0].")
def audit_sink_command(no_control: bool, **options: Any) -> None:
    """Store the audit topic (<prefix>.audit) and the control topic in the audit store.

    Migrates the store to the newest schema, then consumes in group <prefix>.g.audit-sink:
    records are written in batches, and a message's offset is committed only after its batch
    is committed in the store, so a killed sink loses nothing and a restarted one duplicates
    nothing. Records that are not valid go to <prefix>.audit.dlq with their original bytes.
    Each control record is stored with the verdict routers reach on it (accepted, rejected
    with the reason, ignored after a lost race), checked against the keyring; without one,
    unverified. Logs as MODELYARD_LOG_LEVEL and MODELYARD_LOG_JSON say (what `up` sets).
    Serves /metrics and /healthz. Every option is also MODELYARD_<NAME> (the store:
    MODELYARD_AUDIT_STORE); SASL/SSL settings as for every worker (MODELYARD_KAFKA_CONFIG).
    """
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from modelyard.audit.store import redact_url  # noqa: PLC0415
    from modelyard.kafka.process import (  # noqa: PLC0415
        announce_ready,
        block_until_stopped,
        exit_code,
        stop_on_signals,
    )
    from modelyard.sink import AuditSink, SinkSettings, tune_interpreter  # noqa: PLC0415
    from modelyard.telemetry import (  # noqa: PLC0415
        configure_logging_from_env,
        start_http_server,
        stop_http_server,
    )

    given = {k: v for k, v in options.items() if v is not None}
    if no_control:
        given["control"] = False
    settings = SinkSettings(**given)
    configure_logging_from_env()
    tune_interpreter()
    registry = CollectorRegistry()
    stop = stop_on_signals()  # before starting: a signal during start-up is not lost
    sink = _run(lambda: AuditSink(settings, registry=registry))
    sink.start()
    host = settings.metrics_host
    http, port = start_http_server(host, settings.metrics_port, registry, sink.health)
    sink.wait_ready(60)
    store = redact_url(settings.audit_store.get_secret_value())
    announce_ready("audit-sink", store=store, metrics=f"{host}:{port}")
    block_until_stopped(stop, [sink])
    sink.stop()
    stop_http_server(http)
    sys.exit(exit_code([sink]))


# output ------------------------------------------------------------------------------------
def _run(action: Any) -> Any:
    """``action()``, a modelyard error becoming a CLI error message."""
    try:
        return action()
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None


def _summary(row: Any) -> dict[str, Any]:
    hop = row.kind == "hop"
    position = (
        f"{row.chain_writer}/{row.chain_partition}/{row.chain_seq}" if row.chain_writer else "-"
    )
    return {
        "kind": row.kind,
        "time": (row.dispatched_at if hop else row.received_at).isoformat(timespec="milliseconds"),
        "request_id": row.request_id, "pipeline": row.pipeline, "principal": row.principal or "-",
        "stage": row.stage if hop else "-",
        "served": f"{row.model}:{row.version}" if hop else
        " ".join(f"{k}={v}" for k, v in row.served_by.items()) or "-",
        "role": row.role if hop else "-", "outcome": row.outcome,
        "latency_ms": f"{row.latency_ms:.1f}", "chain": position,
    }  # fmt: skip


def _print_table(rows: Iterable[Any]) -> None:
    summaries = [_summary(row) for row in rows]
    if not summaries:
        click.echo("no matching records")
        return
    widths = {c: max(len(c), *(len(str(s[c])) for s in summaries)) for c in _TABLE_COLUMNS}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in _TABLE_COLUMNS).rstrip())
    for s in summaries:
        click.echo("  ".join(str(s[c]).ljust(widths[c]) for c in _TABLE_COLUMNS).rstrip())


def _print_jsonl(rows: Iterable[Any]) -> None:
    for row in rows:
        click.echo(json.dumps(_jsonable(row), ensure_ascii=False, separators=(",", ":")))


def _print_csv(rows: Iterable[Any]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=_TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(_summary(row))


def _jsonable(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": row.kind}
    for f in fields(row):
        value = getattr(row, f.name)
        if f.name in ("raw", "kind"):
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        out[f.name] = value
    return out
