"""``modelyard keys create|list``: the Ed25519 keys that sign control changes and audit
checkpoints, and the keyring of public keys that routers verify them against.

A private key is written once, with mode 0600, and never printed; the keyring holds only public
keys, names and roles, so it can be copied to every router (docs/control-plane.md).
"""

from __future__ import annotations

from pathlib import Path

import click

from modelyard.cli.control_options import DEFAULT_KEYRING
from modelyard.errors import ModelyardError
from modelyard.keys import Keyring, Role, SigningKey

__all__ = ["keys_group"]

_KEYRING_HELP = "The keyring (YAML of public keys) [env MODELYARD_KEYRING]."


def _keyring_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--keyring", envvar="MODELYARD_KEYRING", type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_KEYRING, show_default=True, help=_KEYRING_HELP,
    )(func)  # fmt: skip


def _pipelines(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    names = tuple(name.strip() for name in (value or "").split(",") if name.strip())
    return tuple(dict.fromkeys(names))  # in order, once each


@click.group("keys")
def keys_group() -> None:
    """Signing keys and the keyring routers verify control changes against."""


@keys_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "operator", "writer"]), required=True,
              help="admin: change every pipeline; operator: change the --pipelines named; "
              "writer: a router or auditor (audit checkpoints, guard retreats only).")  # fmt: skip
@click.option(
    "--pipelines", callback=_pipelines,
    help="Pipelines an operator may change, comma-separated (operators only).",
)  # fmt: skip
@_keyring_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (mode 0600, never overwritten) "
              "[default: <keyring dir>/keys/NAME.key].")  # fmt: skip
def create_command(
    name: str, role: Role, pipelines: tuple[str, ...], keyring: Path, out: Path | None
) -> None:
    """Create key NAME: write its private key (0600) and add its public entry to the keyring.

    Routers read the keyring at start: copy it to every router and restart them for a new key
    to count. The private key stays with whoever signs (pass it as --key / MODELYARD_OPERATOR_KEY).
    """
    if (role == "operator") != bool(pipelines):
        raise click.UsageError("--pipelines is required for an operator, and only for one")
    out = out or keyring.parent / "keys" / f"{name}.key"
    try:
        ring = Keyring.load(keyring)
        key = SigningKey.generate(name)
        ring.add(key.public_entry(role, pipelines))  # refuses a name already in the keyring
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key.save(out)
        ring.save(keyring)
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None
    scope = f" of {', '.join(pipelines)}" if pipelines else ""
    click.echo(f"created key {name} ({role}{scope}), id {key.key_id}")
    click.echo(f"private key: {out} (mode 0600; keep it secret)")
    click.echo(f"public entry added to {keyring}")


@keys_group.command("list")
@_keyring_option
def list_command(keyring: Path) -> None:
    """List the keyring's keys: key id, name, role and pipelines (no private material)."""
    try:
        entries = Keyring.load(keyring).entries
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None
    if not entries:
        click.echo(f"no keys in {keyring}")
        return
    rows = [("KEY ID", "NAME", "ROLE", "PIPELINES")]
    rows += [(e.key_id, e.name, e.role, _scope(e.role, e.pipelines)) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _scope(role: str, pipelines: tuple[str, ...]) -> str:
    if role == "admin":
        return "(all)"
    return ",".join(pipelines) or "-"
