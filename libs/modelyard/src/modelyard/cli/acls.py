"""`modelyard acls`: the Kafka ACLs a pipeline needs, printed or applied."""

from __future__ import annotations

import click

from modelyard.broker.acls import PipelinePrincipals, apply_acls, pipeline_acls, principal
from modelyard.cli.control_options import Target, target_options

__all__ = ["acls_command"]


def _stage_principal(value: str) -> tuple[tuple[str, str], str]:
    ref, sep, who = value.partition("=")
    model, colon, version = ref.partition(":")
    if not (sep and colon and model and version and who):
        raise click.BadParameter(f"expected MODEL:VERSION=PRINCIPAL, not {value!r}")
    return (model, version), principal(who)


@click.command("acls")
@click.argument("pipeline")
@click.option("--router-principal", required=True, help="The router's principal (User:NAME).")
@click.option(
    "--stage-principal", "stages", multiple=True, metavar="MODEL:VERSION=PRINCIPAL",
    help="A model version the pipeline routes to and its workers' principal (repeatable).",
)  # fmt: skip
@click.option("--operator", "operators", multiple=True, help="An operator principal (repeatable).")
@click.option("--sink-principal", help="The audit sink's principal (User:NAME), if it runs.")
@click.option("--reply-prefix", help="Where callers' reply topics start [PREFIX.gw.].")
@click.option(
    "--apply", "apply", is_flag=True, help="Create them on the cluster (as a super user)."
)
@target_options
def acls_command(  # noqa: PLR0917  # click passes every option by keyword
    pipeline: str,
    router_principal: str,
    stages: tuple[str, ...],
    operators: tuple[str, ...],
    sink_principal: str | None,
    reply_prefix: str | None,
    apply: bool,
    target: Target,
) -> None:
    """Print (or --apply) the ACLs of PIPELINE: least privilege for its router, each stage
    version's workers, the operators and the audit sink. Operators and routers write the
    control topic; what a record may change is the keyring's to say (routers sign only guard
    rollbacks)."""
    try:
        by_stage = dict(_stage_principal(s) for s in stages)
    except click.BadParameter as exc:
        raise click.UsageError(str(exc)) from None
    sink = principal(sink_principal) if sink_principal else None
    who = PipelinePrincipals(
        principal(router_principal), by_stage, [principal(o) for o in operators], sink
    )
    acls = pipeline_acls(pipeline, who, target.prefix, reply_prefix)
    for acl in acls:
        click.echo(str(acl))
    if apply:
        apply_acls(target.bootstrap, acls, target.kafka)
        click.echo(f"applied {len(acls)} ACLs", err=True)
