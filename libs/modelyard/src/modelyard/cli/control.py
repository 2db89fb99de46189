"""The control CLI: ``status``, ``history``, ``rollout``, ``canary``, ``shadow``, ``promote``,
``rollback`` and ``release save/list``.

Every change is one record on the control topic (``yard.control``) naming who made it
(``--actor``), when and why (``--reason``); every router follows that topic. A change that names
a version is checked first: the version must exist in the model repository and the pipeline
spec (``<pipelines>/<pipeline>.yaml``) must satisfy its tensor contract with it.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from modelyard.control import (
    CanaryChange,
    Change,
    ControlRecord,
    GuardRule,
    GuardsChange,
    Promote,
    ReleaseRollback,
    ReleaseSave,
    Rollback,
    Rollout,
    ShadowChange,
)
from modelyard.control.describe import describe_change
from modelyard.errors import ConfigError, ModelyardError

__all__ = ["CONTROL_COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])


def _quiet_logs() -> None:
    """Warnings and errors only, on stderr: stdout carries the command's answer.

    The stream is looked up per message (not bound once), so a test runner that swaps
    ``sys.stderr`` per invocation keeps working.
    """
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _default_actor() -> str:
    return os.environ.get("MODELYARD_ACTOR") or getpass.getuser()


@dataclass(frozen=True)
class _Target:
    """Where the control topic is: bootstrap servers, topic prefix, extra client settings."""

    bootstrap: str
    prefix: str
    kafka: dict[str, Any]


def _kafka_config(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if value else {}
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("expected a JSON object of librdkafka settings")
    return parsed


def _target_options(func: Callable[..., None]) -> Callable[..., None]:
    """Add --bootstrap, --topic-prefix and --kafka-config; the command gets ``target``."""

    @functools.wraps(func)
    def command(*args: Any, bootstrap: str, prefix: str, kafka: dict[str, Any], **kw: Any) -> None:
        func(*args, target=_Target(bootstrap, prefix, kafka), **kw)

    options = [
        click.option(
            "--bootstrap", envvar="MODELYARD_BOOTSTRAP", default="127.0.0.1:9092",
            show_default=True, help="Kafka bootstrap servers [env MODELYARD_BOOTSTRAP].",
        ),
        click.option(
            "--topic-prefix", "prefix", envvar="MODELYARD_TOPIC_PREFIX", default="yard",
            show_default=True, help="Prefix of modelyard topics (control topic: PREFIX.control).",
        ),
        click.option(
            "--kafka-config", "kafka", envvar="MODELYARD_KAFKA_CONFIG", callback=_kafka_config,
            help="Extra librdkafka settings as JSON, e.g. SASL/SSL [env MODELYARD_KAFKA_CONFIG].",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _pipelines_option(func: F) -> F:
    return click.option(
        "--pipelines", type=click.Path(file_okay=False, path_type=Path), default=Path("pipelines"),
        show_default=True, help="Directory of pipeline specs (<pipeline>.yaml).",
    )(func)  # fmt: skip


def _write_options(func: Callable[..., None]) -> Callable[..., None]:
    func = click.option("--reason", default="", help="Why: kept in the record and the history.")(
        func
    )
    func = click.option(
        "--actor", default=_default_actor, show_default="env MODELYARD_ACTOR, else the OS user",
        help="Who makes the change (recorded).",
    )(func)  # fmt: skip
    func = click.option(
        "--repository", type=click.Path(file_okay=False, path_type=Path), default=Path("models"),
        show_default=True, help="Model repository the version is checked against.",
    )(func)  # fmt: skip
    return _target_options(_pipelines_option(func))


class _Share(click.ParamType[float]):
    """A share in (0, 1]: ``0.1`` or ``10%``."""

    name = "share"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        text = str(value).strip()
        try:
            share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            self.fail(f"{value!r} is not a number or a percentage", param, ctx)
        if not 0 < share <= 1:
            self.fail(f"{value!r} is not in (0, 1] (or (0%, 100%])", param, ctx)
        return share


SHARE = _Share()

C = TypeVar("C", bound=BaseModel)


def _make(kind: type[C], **fields: Any) -> C:
    """A change from the command line; a bad name or version is a usage error, not a traceback."""
    try:
        return kind(**fields)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise click.UsageError(f"{where} {first['input']!r}: {first['msg']}") from None


def _apply(
    pipeline: str,
    change: Change,
    *,
    target: _Target,
    pipelines: Path,
    repository: Path,
    actor: str,
    reason: str,
) -> None:
    """Check ``change`` at deploy time, write it, and say what was written."""
    from modelyard.control.topic import write_change  # noqa: PLC0415  # Kafka only when needed

    _quiet_logs()
    try:
        _check(pipeline, change, target, pipelines, repository)
        record = write_change(
            target.bootstrap, pipeline, change, actor=actor, reason=reason,
            prefix=target.prefix, kafka=target.kafka,
        )  # fmt: skip
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(_written(record))


def _check(
    pipeline: str, change: Change, target: _Target, pipelines: Path, repository: Path
) -> None:
    from modelyard.control.deploy import check_change  # noqa: PLC0415
    from modelyard.control.topic import read_state  # noqa: PLC0415
    from modelyard.repository.store import ModelRepository  # noqa: PLC0415
    from modelyard.router import load_spec  # noqa: PLC0415

    path = pipelines / f"{pipeline}.yaml"
    names_version = isinstance(change, Rollout | ReleaseRollback) or (
        isinstance(change, CanaryChange | ShadowChange) and change.version is not None
    )
    if not path.is_file():
        if names_version:
            raise ConfigError(
                f"no pipeline spec {path}: it is needed to check the change against the "
                f"models' tensor contract (--pipelines DIR)"
            )
        return  # a rollback, promote or clear names no new version: nothing to check
    spec = load_spec(path)
    if spec.pipeline != pipeline:
        raise ConfigError(f"{path} describes pipeline {spec.pipeline!r}, not {pipeline!r}")
    state = read_state(target.bootstrap, prefix=target.prefix, kafka=target.kafka)
    routing = state.pipeline(pipeline)
    check_change(spec, ModelRepository(repository), routing, change)


def _written(record: ControlRecord) -> str:
    from modelyard.cli.control_view import when  # noqa: PLC0415

    what = describe_change(record.change)
    return f"{record.key}: {what} (seq {record.seq}, by {record.actor} at {when(record.at)})"


# --- reading -------------------------------------------------------------------------------


@click.command("status")
@click.argument("pipeline", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the routing state as JSON.")
@_pipelines_option
@_target_options
def status_command(pipeline: str | None, as_json: bool, pipelines: Path, target: _Target) -> None:
    """Show each stage's active, previous, canary and shadow versions and its last change.

    Without PIPELINE, every pipeline on the control topic. Stages are listed in the order of
    the pipeline spec when <pipelines>/<pipeline>.yaml exists.
    """
    from modelyard.cli.control_view import status_text  # noqa: PLC0415
    from modelyard.control import ControlState  # noqa: PLC0415

    records = _records(target)
    state = ControlState.from_records(records)
    names = [pipeline] if pipeline else sorted(state.pipelines)
    if as_json:
        click.echo(json.dumps({n: state.pipeline(n).model_dump(mode="json") for n in names}))
        return
    if not names:
        click.echo(f"no pipelines on {target.prefix}.control at {target.bootstrap} yet")
    for i, name in enumerate(names):
        mine = [r for r in records if r.key == name]
        click.echo(
            ("\n" if i else "") + status_text(state.pipeline(name), mine, _order(pipelines, name))
        )


@click.command("history")
@click.argument("pipeline")
@click.option("--last", type=click.IntRange(min=1), help="Only the last N records.")
@_target_options
def history_command(pipeline: str, last: int | None, target: _Target) -> None:
    """List every change of PIPELINE: seq, when, who, what and why."""
    from modelyard.cli.control_view import history_table  # noqa: PLC0415

    records = [r for r in _records(target) if r.key == pipeline]
    if not records:
        click.echo(f"no changes of pipeline {pipeline!r} on {target.prefix}.control")
        return
    click.echo(history_table(records[-last:] if last else records))


def _records(target: _Target) -> list[ControlRecord]:
    from modelyard.control.topic import read_records  # noqa: PLC0415

    _quiet_logs()
    try:
        found = read_records(target.bootstrap, prefix=target.prefix, kafka=target.kafka)
        return [p.record for p in found]
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None


def _order(pipelines: Path, pipeline: str) -> tuple[str, ...]:
    from modelyard.router import load_spec  # noqa: PLC0415

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
@_write_options
def rollout_command(pipeline: str, stage: str, version: str, **options: Any) -> None:
    """Make VERSION the active version of STAGE; the old one becomes its rollback target."""
    _apply(pipeline, _make(Rollout, stage=stage, version=version), **options)


@click.command("canary")
@click.argument("pipeline")
@click.argument("stage")
@click.argument("version", required=False)
@click.option("--weight", type=SHARE, help="Share of sticky keys sent to VERSION: 0.1 or 10%.")
@click.option("--clear", is_flag=True, help="Remove the stage's canary.")
@_write_options
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
    change = _make(CanaryChange, stage=stage, version=version, weight=weight or 0.0)
    _apply(pipeline, change, **options)


@click.command("guard")
@click.argument("pipeline")
@click.argument("stage")
@click.option("--error-rate", type=float, help="Roll the canary back above this error share.")
@click.option("--p99-ms", type=float, help="Roll the canary back above this p99 latency (ms).")
@click.option("--shadow-disagreement", type=float,
              help="Withdraw the shadow version above this share of disagreeing runs.")  # fmt: skip
@click.option("--window-s", type=float, default=60.0, show_default=True, help="Window of each.")
@click.option("--min-requests", type=int, default=50, show_default=True,
              help="No verdict on fewer canary hops or shadow runs in the window.")  # fmt: skip
@click.option("--clear", is_flag=True, help="Remove the stage's guard rules.")
@_write_options
def guard_command(pipeline: str, stage: str, clear: bool, **options: Any) -> None:
    """Set STAGE's guard rules, or --clear them.

    Every router rolls the stage's canary back by itself (one control record by router:guard,
    with the figure) when its error rate or p99 latency over the window crosses the bound. The
    shadow auditor withdraws the stage's shadow version (its shadow and canary cleared, one
    record by shadow-audit:guard) when the share of its runs whose outputs differ from the
    primary's crosses --shadow-disagreement."""
    bounds = {
        "error_rate": options.pop("error_rate"),
        "p99_latency_ms": options.pop("p99_ms"),
        "shadow_disagreement": options.pop("shadow_disagreement"),
    }
    window_s, min_requests = options.pop("window_s"), options.pop("min_requests")
    given = {metric: bound for metric, bound in bounds.items() if bound is not None}
    if clear == bool(given):
        raise click.UsageError(
            "give --error-rate, --p99-ms and/or --shadow-disagreement, or --clear"
        )
    rules = [
        _make(GuardRule, metric=metric, max=bound, window_s=window_s, min_requests=min_requests)
        for metric, bound in given.items()
    ]
    _apply(pipeline, _make(GuardsChange, stage=stage, rules=tuple(rules)), **options)


@click.command("shadow")
@click.argument("pipeline")
@click.argument("stage")
@click.argument("version", required=False)
@click.option("--sample-rate", type=SHARE, default=1.0, show_default=True,
              help="Share of requests whose input is mirrored to VERSION.")  # fmt: skip
@click.option("--clear", is_flag=True, help="Remove the stage's shadow.")
@_write_options
def shadow_command(
    pipeline: str, stage: str, version: str | None, sample_rate: float, clear: bool, **options: Any
) -> None:
    """Mirror a sample of STAGE's inputs to VERSION (replies go to the shadow topic only)."""
    if clear == (version is not None):
        raise click.UsageError("give VERSION, or --clear")
    change = _make(ShadowChange, stage=stage, version=version, sample_rate=sample_rate)
    _apply(pipeline, change, **options)


@click.command("promote")
@click.argument("pipeline")
@click.argument("stage")
@_write_options
def promote_command(pipeline: str, stage: str, **options: Any) -> None:
    """Make STAGE's canary its active version (the old active becomes the rollback target)."""
    _apply(pipeline, _make(Promote, stage=stage), **options)


@click.command("rollback")
@click.argument("pipeline")
@click.argument("stage", required=False)
@click.option("--release", help="Restore every stage of this saved release, in one record.")
@_write_options
def rollback_command(pipeline: str, stage: str | None, release: str | None, **options: Any) -> None:
    """Roll STAGE back to its previous version (other stages untouched), or every stage to
    the saved --release NAME at once."""
    if (stage is None) == (release is None):
        raise click.UsageError("give STAGE, or --release NAME")
    change: Change = (
        _make(Rollback, stage=stage) if stage else _make(ReleaseRollback, release=release)
    )
    _apply(pipeline, change, **options)


@click.group("release")
def release_group() -> None:
    """Named snapshots of every stage's active version (restore with rollback --release)."""


@release_group.command("save")
@click.argument("pipeline")
@click.argument("name")
@_write_options
def release_save_command(pipeline: str, name: str, **options: Any) -> None:
    """Save every stage's active version of PIPELINE under NAME."""
    _apply(pipeline, _make(ReleaseSave, release=name), **options)


@release_group.command("list")
@click.argument("pipeline")
@_target_options
def release_list_command(pipeline: str, target: _Target) -> None:
    """List PIPELINE's saved releases."""
    from modelyard.control import ControlState  # noqa: PLC0415

    releases = ControlState.from_records(_records(target)).pipeline(pipeline).releases
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
