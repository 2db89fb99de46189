"""The control CLI: ``status``, ``history``, ``rollout``, ``canary``, ``shadow``, ``promote``,
``rollback``, ``guard`` and ``release save/list`` (shared options: ``control_options``).

Every change is one record on the control topic (``yard.control``), signed by an operator key
(``--key``; the record names the key's name as who made it), saying when and why
(``--reason``); every router follows that topic and applies only records that its keyring
verifies (docs/control-plane.md). A change that names a version is checked first: the version
must exist in the model repository and the pipeline spec (``<pipelines>/<pipeline>.yaml``) must
satisfy its tensor contract with it. ``status`` and ``history`` fold the topic as routers do and
show the records they reject.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from modelyard.cli.control_options import (
    SHARE,
    Target,
    apply_change,
    make_change,
    pipelines_option,
    quiet_logs,
    repository_option,
    target_options,
    write_options,
)
from modelyard.control import (
    CanaryChange,
    Change,
    GuardRule,
    GuardsChange,
    Promote,
    ReleaseRollback,
    ReleaseSave,
    Rollback,
    Rollout,
    ShadowChange,
)
from modelyard.control.chain import Positioned
from modelyard.errors import ConfigError, ModelyardError

__all__ = ["CONTROL_COMMANDS"]

# --- reading -------------------------------------------------------------------------------


@click.command("status")
@click.argument("pipeline", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the routing state as JSON.")
@pipelines_option
@repository_option
@target_options
def status_command(
    pipeline: str | None, as_json: bool, pipelines: Path, repository: Path, target: Target
) -> None:
    """Show each stage's active, previous, canary and shadow versions and its last change.

    Without PIPELINE, every pipeline on the control topic. Stages are listed in the order of
    the pipeline spec when <pipelines>/<pipeline>.yaml exists. Records that routers reject
    (unsigned, forged, not authorised: see --keyring) are counted, the last one shown.
    """
    from modelyard.cli.control_view import status_text  # noqa: PLC0415
    from modelyard.control import ControlState  # noqa: PLC0415

    found = _positioned(target, pipelines, repository)
    records = [p.record for p in found if p.applied]
    state = ControlState.from_records(records)
    names = [pipeline] if pipeline else sorted(state.pipelines)
    if as_json:
        click.echo(json.dumps({n: state.pipeline(n).model_dump(mode="json") for n in names}))
        return
    if not names:
        click.echo(f"no pipelines on {target.prefix}.control at {target.bootstrap} yet")
    for i, name in enumerate(names):
        mine = [r for r in records if r.key == name]
        rejected = [p for p in found if p.rejected is not None and p.record.key == name]
        text = status_text(state.pipeline(name), mine, _order(pipelines, name), rejected)
        click.echo(("\n" if i else "") + text)


@click.command("history")
@click.argument("pipeline")
@click.option("--last", type=click.IntRange(min=1), help="Only the last N records.")
@pipelines_option
@repository_option
@target_options
def history_command(
    pipeline: str, last: int | None, pipelines: Path, repository: Path, target: Target
) -> None:
    """List every change of PIPELINE: seq, when, who, what and why, and every record routers
    rejected (REJECTED, with the reason: unsigned, bad signature, unknown key, not authorised,
    inconsistent, not deployable), which changed nothing."""
    from modelyard.cli.control_view import history_table  # noqa: PLC0415

    found = _positioned(target, pipelines, repository)
    shown = [p for p in found if p.record.key == pipeline and _shown(p)]
    if not shown:
        click.echo(f"no changes of pipeline {pipeline!r} on {target.prefix}.control")
        return
    click.echo(history_table(shown[-last:] if last else shown))


def _shown(record: Positioned) -> bool:
    """Applied and rejected records; not the copies that lost a race (their writer retried)."""
    return record.applied or record.rejected is not None


def _positioned(target: Target, pipelines: Path, repository: Path) -> list[Positioned]:
    """Every record, marked as a router with this keyring, these specs and this repository
    marks it: applied, lost a race, or rejected."""
    from modelyard.control.topic import read_records  # noqa: PLC0415

    quiet_logs()
    try:
        verifier = target.verifier(pipelines, repository)
        return read_records(
            target.bootstrap, prefix=target.prefix, kafka=target.kafka, verifier=verifier
        )
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None


def _order(pipelines: Path, pipeline: str) -> tuple[str, ...]:
    from modelyard.graph import load_spec  # noqa: PLC0415

    path = pipelines / f"{pipeline}.yaml"
    try:
        return load_spec(path).topological_order() if path.is_file() else ()
    except ConfigError:
        return ()  # an invalid spec does not hide the routing


# --- writing -------------------------------------------------------------------------------


@click.command("rollout")
@click.argument("pipeline")
@click.argument("stage")
@click.argument("version")
@write_options
def rollout_command(pipeline: str, stage: str, version: str, **options: Any) -> None:
    """Make VERSION the active version of STAGE; the old one becomes its rollback target."""
    apply_change(pipeline, make_change(Rollout, stage=stage, version=version), **options)


@click.command("canary")
@click.argument("pipeline")
@click.argument("stage")
@click.argument("version", required=False)
@click.option("--weight", type=SHARE, help="Share of sticky keys sent to VERSION: 0.1 or 10%.")
@click.option("--clear", is_flag=True, help="Remove the stage's canary.")
@write_options
def canary_command(
    pipeline: str,
    stage: str,
    version: str | None,
    weight: float | None,
    clear: bool,
    **options: Any,
) -> None:
    """Send a sticky share (--weight) of STAGE's traffic to VERSION, or --clear the canary."""
    if clear == (version is not None) or (not clear and weight is None):
        raise click.UsageError("give VERSION and --weight, or --clear")
    change = make_change(CanaryChange, stage=stage, version=version, weight=weight or 0.0)
    apply_change(pipeline, change, **options)


_GUARD_OPTIONS = (  # metric, option, bound side
    ("error_rate", "error_rate", "max"),
    ("p99_latency_ms", "p99_ms", "max"),
    ("shadow_disagreement", "shadow_disagreement", "max"),
    ("p99_latency_ratio", "p99_ratio", "max"),
    ("drift_psi", "drift_psi", "max"),
    ("drift_p_value", "drift_p_value", "min"),
    ("shadow_agreement", "shadow_agreement", "min"),
)


@click.command("guard")
@click.argument("pipeline")
@click.argument("stage")
@click.option("--error-rate", type=float, help="Roll the canary back above this error share.")
@click.option("--p99-ms", type=float, help="Roll the canary back above this p99 latency (ms).")
@click.option("--shadow-disagreement", type=float,
              help="Withdraw the shadow version above this share of disagreeing runs.")  # fmt: skip
@click.option("--p99-ratio", type=float,
              help="Monitor: withdraw a canary or shadow whose p99 is above this multiple of the "
                   "active version's in the same window.")  # fmt: skip
@click.option("--drift-psi", type=float,
              help="Monitor: withdraw a canary or shadow with a monitored field's PSI above "
                   "this, against the active version in the same window.")  # fmt: skip
@click.option("--drift-p-value", type=float,
              help="Monitor: withdraw a canary or shadow with a field's adjusted chi-squared / "
                   "KS p-value below this.")  # fmt: skip
@click.option("--shadow-agreement", type=float,
              help="Monitor: withdraw a shadow version agreeing with the primary less often "
                   "than this share of its compared runs in a window.")  # fmt: skip
@click.option("--window-s", type=float, default=60.0, show_default=True,
              help="Window of the router's and shadow auditor's rules (the monitor judges its "
                   "own windows).")  # fmt: skip
@click.option("--min-requests", type=int, default=50, show_default=True,
              help="No verdict on fewer canary hops or shadow runs in the window.")  # fmt: skip
@click.option("--clear", is_flag=True, help="Remove the stage's guard rules.")
@write_options
def guard_command(pipeline: str, stage: str, clear: bool, **options: Any) -> None:
    """Set STAGE's guard rules, or --clear them.

    Every router rolls the stage's canary back by itself (one control record signed by the
    router's writer key, with the figure) when its error rate or p99 latency over the window
    crosses the bound. The shadow auditor withdraws the stage's shadow version (its shadow and
    canary cleared, one record signed by its writer key) when the share of its runs whose
    outputs differ from the primary's crosses --shadow-disagreement. `modelyard monitor`
    withdraws a canary or shadow whose closed window crosses --p99-ratio, --drift-psi,
    --drift-p-value or --shadow-agreement (docs/monitor.md). Guard rules are what let a writer
    key change a stage at all: only such a retreat, only where rules are set."""
    bounds = {  # metric -> (bound, which side)
        metric: (options.pop(option), side) for metric, option, side in _GUARD_OPTIONS
    }
    window_s, min_requests = options.pop("window_s"), options.pop("min_requests")
    given = {metric: b for metric, b in bounds.items() if b[0] is not None}
    if clear == bool(given):
        raise click.UsageError("give one or more bounds (see --help), or --clear")
    rules = [
        make_change(
            GuardRule,
            metric=metric,
            window_s=window_s,
            min_requests=min_requests,
            **{side: bound},
        )
        for metric, (bound, side) in given.items()
    ]
    apply_change(pipeline, make_change(GuardsChange, stage=stage, rules=tuple(rules)), **options)


@click.command("shadow")
@click.argument("pipeline")
@click.argument("stage")
@click.argument("version", required=False)
@click.option("--sample-rate", type=SHARE, default=1.0, show_default=True,
              help="Share of requests whose input is mirrored to VERSION.")  # fmt: skip
@click.option("--clear", is_flag=True, help="Remove the stage's shadow.")
@write_options
def shadow_command(
    pipeline: str, stage: str, version: str | None, sample_rate: float, clear: bool, **options: Any
) -> None:
    """Mirror a sample of STAGE's inputs to VERSION (replies go to the shadow topic only)."""
    if clear == (version is not None):
        raise click.UsageError("give VERSION, or --clear")
    change = make_change(ShadowChange, stage=stage, version=version, sample_rate=sample_rate)
    apply_change(pipeline, change, **options)


@click.command("promote")
@click.argument("pipeline")
@click.argument("stage")
@write_options
def promote_command(pipeline: str, stage: str, **options: Any) -> None:
    """Make STAGE's canary its active version (the old active becomes the rollback target)."""
    apply_change(pipeline, make_change(Promote, stage=stage), **options)


@click.command("rollback")
@click.argument("pipeline")
@click.argument("stage", required=False)
@click.option("--release", help="Restore every stage of this saved release, in one record.")
@write_options
def rollback_command(pipeline: str, stage: str | None, release: str | None, **options: Any) -> None:
    """Roll STAGE back to its previous version (other stages untouched), or every stage to
    the saved --release NAME at once."""
    if (stage is None) == (release is None):
        raise click.UsageError("give STAGE, or --release NAME")
    change: Change = (
        make_change(Rollback, stage=stage)
        if stage
        else make_change(ReleaseRollback, release=release)
    )
    apply_change(pipeline, change, **options)


@click.group("release")
def release_group() -> None:
    """Named snapshots of every stage's active version (restore with rollback --release)."""


@release_group.command("save")
@click.argument("pipeline")
@click.argument("name")
@write_options
def release_save_command(pipeline: str, name: str, **options: Any) -> None:
    """Save every stage's active version of PIPELINE under NAME."""
    apply_change(pipeline, make_change(ReleaseSave, release=name), **options)


@release_group.command("list")
@click.argument("pipeline")
@pipelines_option
@repository_option
@target_options
def release_list_command(pipeline: str, pipelines: Path, repository: Path, target: Target) -> None:
    """List PIPELINE's saved releases."""
    from modelyard.control import ControlState  # noqa: PLC0415

    applied = [p.record for p in _positioned(target, pipelines, repository) if p.applied]
    releases = ControlState.from_records(applied).pipeline(pipeline).releases
    for release in releases.values():
        click.echo(f"{release.name}: " + ", ".join(f"{s}={v}" for s, v in release.stages.items()))
    if not releases:
        click.echo(f"no releases of pipeline {pipeline!r}")


CONTROL_COMMANDS: tuple[click.Command, ...] = (
    status_command,
    guard_command,
    history_command,
    rollout_command,
    canary_command,
    shadow_command,
    promote_command,
    rollback_command,
    release_group,
)
