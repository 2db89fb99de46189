"""What every control command shares: where the control topic is, who writes, and how a change
is checked at deploy time, written and reported (``modelyard.cli.control`` holds the commands).
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
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
    Promote,
    ReleaseRollback,
    Rollback,
    Rollout,
    ShadowChange,
)
from modelyard.control.describe import describe_change
from modelyard.errors import ConfigError, ModelyardError

__all__ = [
    "SHARE",
    "Target",
    "apply_change",
    "make_change",
    "pipelines_option",
    "quiet_logs",
    "target_options",
    "write_options",
]

F = TypeVar("F", bound=Callable[..., Any])

_RETRIES = 2  # a change that lost a race is checked and written again on the new state
# what these mean depends on the state they were built on (pop the rollback stack, promote the
# canary the operator saw): never retried on another state, the operator decides
_NOT_RETRIED = (Rollback, Promote)


def quiet_logs() -> None:
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
class Target:
    """Where the control topic is: bootstrap servers, topic prefix, extra client settings."""

    bootstrap: str
    prefix: str
    kafka: dict[str, Any] = field(repr=False)  # may hold sasl.password


def _kafka_config(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if value else {}
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("expected a JSON object of librdkafka settings")
    return parsed


def target_options(func: Callable[..., None]) -> Callable[..., None]:
    """Add --bootstrap, --topic-prefix and --kafka-config; the command gets ``target``."""

    @functools.wraps(func)
    def command(*args: Any, bootstrap: str, prefix: str, kafka: dict[str, Any], **kw: Any) -> None:
        func(*args, target=Target(bootstrap, prefix, kafka), **kw)

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


def pipelines_option(func: F) -> F:
    return click.option(
        "--pipelines", type=click.Path(file_okay=False, path_type=Path), default=Path("pipelines"),
        show_default=True, help="Directory of pipeline specs (<pipeline>.yaml).",
    )(func)  # fmt: skip


def write_options(func: Callable[..., None]) -> Callable[..., None]:
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
    return target_options(pipelines_option(func))


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


def make_change(kind: type[C], **fields: Any) -> C:
    """A change from the command line; a bad name or version is a usage error, not a traceback."""
    try:
        return kind(**fields)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise click.UsageError(f"{where} {first['input']!r}: {first['msg']}") from None


def apply_change(
    pipeline: str,
    change: Change,
    *,
    target: Target,
    pipelines: Path,
    repository: Path,
    actor: str,
    reason: str,
) -> None:
    """Check ``change`` at deploy time, write it, and say what was written.

    A change that lost a race to another writer's (``ConcurrentChangeError``) is checked and
    written again on the new state, up to ``_RETRIES`` times, unless it is one whose meaning
    depends on the state it was built on (rollback, promote): then the operator is told.
    """
    from modelyard.control.topic import ConcurrentChangeError  # noqa: PLC0415

    quiet_logs()
    write = functools.partial(_check_and_write, pipeline, change, target, pipelines, repository,
                              actor=actor, reason=reason)  # fmt: skip
    for attempt in range(_RETRIES + 1):
        try:
            record = write()
        except ConcurrentChangeError as exc:
            if attempt == _RETRIES or isinstance(change, _NOT_RETRIED):
                raise click.ClickException(exc.message) from None
            click.echo(f"{exc.message.split(';')[0]}; trying again on the new state", err=True)
            continue
        except ModelyardError as exc:
            raise click.ClickException(exc.message) from None
        click.echo(_written(record))
        return


def _check_and_write(
    pipeline: str, change: Change, target: Target, pipelines: Path, repository: Path, *,
    actor: str, reason: str,
) -> ControlRecord:  # fmt: skip
    from modelyard.control.topic import write_change  # noqa: PLC0415  # Kafka only when needed

    _check(pipeline, change, target, pipelines, repository)
    return write_change(
        target.bootstrap, pipeline, change, actor=actor, reason=reason,
        prefix=target.prefix, kafka=target.kafka,
    )  # fmt: skip


def _check(
    pipeline: str, change: Change, target: Target, pipelines: Path, repository: Path
) -> None:
    from modelyard.control.deploy import check_change  # noqa: PLC0415
    from modelyard.control.topic import read_state  # noqa: PLC0415
    from modelyard.graph import load_spec  # noqa: PLC0415
    from modelyard.repository.store import ModelRepository  # noqa: PLC0415

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
