"""`modelyard tokens`: the tokens file, which names principals and what each may call."""

from __future__ import annotations

from pathlib import Path

import click

from modelyard.auth import TokenEntry, TokenTable, hash_token, new_token

__all__ = ["names", "tokens_group"]

_FILE = click.option(
    "--file", "path", required=True, envvar="MODELYARD_TOKENS_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The tokens file (MODELYARD_TOKENS_FILE); created when missing.",
)  # fmt: skip


def names(value: str | None) -> tuple[str, ...]:
    """A comma-separated option as names ("a, b" -> ("a", "b"))."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@click.group("tokens")
def tokens_group() -> None:
    """Bearer tokens and allow lists of gRPC callers (routers: pipelines; stages: models)."""


@tokens_group.command("add")
@click.argument("principal")
@click.option("--pipelines", help="Pipelines it may call, comma-separated ('*': all).")
@click.option("--models", help="Models it may call: 'name' or 'name:version', comma-separated.")
@click.option("--no-token", is_flag=True, help="Allow list only: a principal proven by mTLS.")
@_FILE
def add_command(
    principal: str, pipelines: str | None, models: str | None, no_token: bool, path: Path
) -> None:
    """Add PRINCIPAL to the tokens file with a new random token, printed once.

    Only the token's sha256 is stored: keep the printed token, it cannot be shown again.
    Several tokens of one principal may coexist (rotate by adding one, then removing the old
    entry from the file).
    """
    if not (pipelines or models):
        raise click.UsageError("give --pipelines or --models: an entry must allow something")
    token = None if no_token else new_token()
    entry = TokenEntry(
        principal=principal,
        token_sha256=None if token is None else hash_token(token),
        pipelines=names(pipelines),
        models=names(models),
    )
    TokenTable.load(path).add(entry).save(path)
    if token is None:
        click.echo(f"added {principal} to {path} (no token: mTLS or trusted network)", err=True)
        return
    click.echo(f"added a token for {principal} to {path}; it is shown only now:", err=True)
    click.echo(token)


@tokens_group.command("list")
@_FILE
def list_command(path: Path) -> None:
    """List the principals of the tokens file and what each may call (never a token)."""
    for entry in TokenTable.load(path).entries:
        kind = "token" if entry.token_sha256 else "no token"
        click.echo(
            f"{entry.principal}\t{kind}\tpipelines={','.join(entry.pipelines) or '-'}"
            f"\tmodels={','.join(entry.models) or '-'}"
        )
