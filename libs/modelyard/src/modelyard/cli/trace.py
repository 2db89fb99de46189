"""``modelyard trace``: print one request's waterfall from the audit store, or the audit topic."""

from __future__ import annotations

import click

from modelyard.audit.reader import AuditScan, read_request_records, read_stored_records
from modelyard.audit.waterfall import render_waterfall
from modelyard.errors import ModelyardError
from modelyard.topics import audit_topic

__all__ = ["trace_command"]


@click.command("trace")
@click.argument("request_id")
@click.option(
    "--bootstrap", envvar="MODELYARD_BOOTSTRAP", default="127.0.0.1:9092", show_default=True,
    help="Kafka bootstrap servers.",
)  # fmt: skip
@click.option(
    "--topic-prefix", envvar="MODELYARD_TOPIC_PREFIX", default="yard", show_default=True,
    help="Prefix of modelyard topics.",
)  # fmt: skip
@click.option(
    "--timeout", type=float, default=30.0, show_default=True,
    help="Longest time, in seconds, to read the audit topic.",
)  # fmt: skip
@click.option("--width", type=click.IntRange(10, 200), default=40, show_default=True,
              help="Width of the timeline, in characters.")  # fmt: skip
@click.option("--store", envvar="MODELYARD_AUDIT_STORE",
              help="Read the audit store (sqlite:///PATH or postgresql://...) instead of the "
              "topic [env MODELYARD_AUDIT_STORE].")  # fmt: skip
def trace_command(
    request_id: str, *, bootstrap: str, topic_prefix: str, timeout: float, width: int,
    store: str | None,
) -> None:  # fmt: skip
    """Print the waterfall of REQUEST_ID: every stage it ran through, with timings.

    With an audit store configured (--store), reads that request's records from it; else
    reads the audit topic (<prefix>.audit) from the beginning to its end. One line per stage
    execution (shadow copies marked), under a line for the whole request with its total
    latency, outcome and served_by. A request the store does not hold (yet: the sink may lag)
    is looked for on the topic.
    """
    topic = audit_topic(topic_prefix)
    scan = _from_store(store, request_id) if store else AuditScan()
    try:
        if not scan.records:
            scan = read_request_records(bootstrap, topic, request_id, timeout_s=timeout)
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None
    if not scan.complete:
        click.echo(f"warning: {topic} was not read to its end within {timeout:.0f}s", err=True)
    if scan.unreadable:
        click.echo(
            f"warning: {scan.unreadable} record(s) of {request_id} were unreadable", err=True
        )
    if not scan.records:
        raise click.ClickException(
            f"no audit records for request {request_id!r} in {topic} ({scan.scanned} records "
            "read). Check the id, --bootstrap and --topic-prefix; records appear once a router "
            "has handled the request."
        )
    for line in render_waterfall(scan.records, width=width):
        click.echo(line)


def _from_store(store: str, request_id: str) -> AuditScan:
    """The request's records in the store; none (the topic is read) when it cannot be read."""
    try:
        return read_stored_records(store, request_id)
    except ModelyardError as exc:
        click.echo(f"warning: audit store not read ({exc.message}); reading the topic", err=True)
        return AuditScan()
