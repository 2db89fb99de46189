"""`modelyard callers`: the keys Kafka requests are signed with (HMAC-SHA256)."""

from __future__ import annotations

from pathlib import Path

import click

from modelyard.auth import CallerKeys, new_caller_key
from modelyard.cli.tokens import names
from modelyard.errors import ConfigError

__all__ = ["callers_group"]

_FILE = click.option(
    "--file", "path", required=True, envvar="MODELYARD_CALLERS_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The callers file the router verifies with (MODELYARD_CALLERS_FILE; mode 0600).",
)  # fmt: skip


@click.group("callers")
def callers_group() -> None:
    """Keys that sign Kafka requests; the router verifies them when auth is on."""


@callers_group.command("add")
@click.argument("principal")
@click.option("--pipelines", required=True, help="Pipelines it may call, comma-separated.")
@click.option(
    "--may-act-for", is_flag=True,
    help="A gateway's key: it may name the callers it authenticated (the router's own).",
)  # fmt: skip
@click.option(
    "--key-out", type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the caller's own key file (mode 0600) for `modelyard send --key-file`.",
)  # fmt: skip
@_FILE
def add_command(
    principal: str, pipelines: str, may_act_for: bool, key_out: Path | None, path: Path
) -> None:
    """Create a signing key for PRINCIPAL and add it to the callers file.

    Both files hold the secret and are written with mode 0600; give the --key-out file to the
    caller only. Prints the new key's id (never the key).
    """
    if key_out is not None and key_out.exists():
        raise ConfigError(f"refusing to overwrite the key file {key_out}")
    key = new_caller_key(principal, names(pipelines), may_act_for=may_act_for)
    CallerKeys.load(path).add(key).save(path)
    if key_out is not None:
        CallerKeys([key]).save(key_out)
    click.echo(f"added key {key.key_id} for {principal} to {path}", err=True)
    click.echo(key.key_id)


@callers_group.command("list")
@_FILE
def list_command(path: Path) -> None:
    """List the keys of the callers file: id, principal, pipelines (never the key)."""
    for key in CallerKeys.load(path).keys:
        acts = "\tmay_act_for" if key.may_act_for else ""
        click.echo(f"{key.key_id}\t{key.principal}\tpipelines={','.join(key.pipelines)}{acts}")
