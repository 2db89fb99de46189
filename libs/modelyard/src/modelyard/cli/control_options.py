"""What every control command shares: where the control topic is, the keyring its records are
verified against, the operator key that signs a change, and how a change is checked at deploy
time, written and reported (``modelyard.cli.control`` holds the commands).

Defaults follow ``modelyard up``: its keyring (``.modelyard/up/keyring.yaml``) and its local
``admin`` key (``.modelyard/up/keys/admin.key``), so the embedded stack needs no setup.
"""

from __future__ import annotations

import functools
import json
import logging
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
from modelyard.control.verify import ControlVerifier, DeployCheck
from modelyard.errors import ConfigError, ModelyardError
from modelyard.keys import SigningKey

__all__ = [
    "DEFAULT_KEY",
    "DEFAULT_KEYRING",
    "SHARE",
    "Target",
    "apply_change",
    "follower_verifier",
    "make_change",
    "pipelines_option",
    "quiet_logs",
    "repository_option",
    "target_options",
    "write_options",
]

F = TypeVar("F", bound=Callable[..., Any])

_RETRIES = 2  # a change that lost a race is checked and written again on the new state
# what these mean depends on the state they were built on (pop the rollback stack, promote the
# canary the operator saw): never retried on another state, the operator decides
_NOT_RETRIED = (Rollback, Promote)
_UP_STATE = Path(".modelyard") / "up"  # modelyard up's default --state-dir (cli/up.py)
DEFAULT_KEYRING = _UP_STATE / "keyring.yaml"
DEFAULT_KEY = _UP_STATE / "keys" / "admin.key"


def follower_verifier(keyring: Path | None, insecure: bool) -> ControlVerifier:
    """What a service that follows the control topic verifies records with: ``--keyring``, or
    nothing under ``--insecure-control`` (development only); a usage error without either."""
    if keyring is not None:
        return ControlVerifier.from_file(keyring)
    if insecure:
        return ControlVerifier(None, {})
    raise click.UsageError("give --keyring (MODELYARD_KEYRING), or --insecure-control")


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


@dataclass(frozen=True)
class Target:
    """Where the control topic is (bootstrap servers, topic prefix, extra client settings) and
    the keyring its records are verified against."""

    bootstrap: str
    prefix: str
    kafka: dict[str, Any] = field(repr=False)  # may hold sasl.password
    keyring: Path = DEFAULT_KEYRING

    def verifier(self, pipelines: Path, repository: Path) -> ControlVerifier:
        """What routers check each record against: signatures and roles, and for each pipeline
        with a spec in ``pipelines``, its versions in ``repository`` and its tensor contract.
        ConfigError when the keyring is missing or empty."""
        if not self.keyring.is_file():
            raise ConfigError(
                f"no keyring at {self.keyring}: give --keyring or set MODELYARD_KEYRING "
                f"(modelyard up creates {DEFAULT_KEYRING})"
            )
        return ControlVerifier.from_file(self.keyring, _deploy_checks(pipelines, repository))


def _deploy_checks(pipelines: Path, repository: Path) -> dict[str, DeployCheck]:
    """A router's deploy check per pipeline whose spec is in ``pipelines`` (valid ones only);
    none without a repository to check against (a status read away from the models)."""
    from modelyard.control.deploy import record_check  # noqa: PLC0415
    from modelyard.graph import load_spec  # noqa: PLC0415
    from modelyard.repository.store import ModelRepository  # noqa: PLC0415

    checks: dict[str, DeployCheck] = {}
    if not repository.is_dir():
        return checks
    for path in sorted(pipelines.glob("*.yaml")) if pipelines.is_dir() else ():
        try:
            spec = load_spec(path)
        except ConfigError:
            continue  # an invalid spec is reported where it is used, not here
        checks[spec.pipeline] = record_check(spec, ModelRepository(repository))
    return checks


def _kafka_config(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if value else {}
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("expected a JSON object of librdkafka settings")
    return parsed


def target_options(func: Callable[..., None]) -> Callable[..., None]:
    """Add --bootstrap, --topic-prefix, --kafka-config and --keyring; the command gets
    ``target``."""

    @functools.wraps(func)
    def command(
        *args: Any, bootstrap: str, prefix: str, kafka: dict[str, Any], keyring: Path, **kw: Any
    ) -> None:
        func(*args, target=Target(bootstrap, prefix, kafka, keyring), **kw)

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
        click.option(
            "--keyring", envvar="MODELYARD_KEYRING",
            type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_KEYRING,
            show_default=True,
            help="Keyring the routers verify control records against; records that fail it "
            "show as rejected [env MODELYARD_KEYRING].",
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


def repository_option(func: F) -> F:
    return click.option(
        "--repository", type=click.Path(file_okay=False, path_type=Path), default=Path("models"),
        show_default=True,
        help="Model repository versions are checked against (as routers check every record).",
    )(func)  # fmt: skip


def write_options(func: Callable[..., None]) -> Callable[..., None]:
    func = click.option("--reason", default="", help="Why: kept in the record and the history.")(
        func
    )
    func = click.option(
        "--key", "key_path", envvar="MODELYARD_OPERATOR_KEY",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Operator key that signs the change; the record names the key's name as who made "
        f"it [env MODELYARD_OPERATOR_KEY; default {DEFAULT_KEY} when it exists].",
    )(func)  # fmt: skip
    return target_options(pipelines_option(repository_option(func)))


class _Share(click.ParamType):  # click < 8.4 (faust-streaming pins it) is not generic
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
    key_path: Path | None,
    reason: str,
) -> None:
    """Check ``change`` at deploy time, sign it with the operator key, write it, and say what
    was written.

    A change that lost a race to another writer's (``ConcurrentChangeError``) is checked and
    written again on the new state, up to ``_RETRIES`` times, unless it is one whose meaning
    depends on the state it was built on (rollback, promote): then the operator is told.
    """
    from modelyard.control.topic import ConcurrentChangeError  # noqa: PLC0415

    quiet_logs()
    try:
        signer, verifier = _load_signer(key_path), target.verifier(pipelines, repository)
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None
    write = functools.partial(_check_and_write, pipeline, change, target, pipelines, repository,
                              signer=signer, verifier=verifier, reason=reason)  # fmt: skip
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


def _load_signer(key_path: Path | None) -> SigningKey:
    """The operator key: --key / MODELYARD_OPERATOR_KEY, else up's local admin key."""
    if key_path is None:
        if not DEFAULT_KEY.is_file():
            raise ConfigError(
                "no operator key: give --key PATH or set MODELYARD_OPERATOR_KEY "
                "(modelyard keys create NAME --role operator --pipelines ...)"
            )
        key_path = DEFAULT_KEY
    return SigningKey.load(key_path)


def _check_and_write(
    pipeline: str, change: Change, target: Target, pipelines: Path, repository: Path, *,
    signer: SigningKey, verifier: ControlVerifier, reason: str,
) -> ControlRecord:  # fmt: skip
    from modelyard.control.topic import write_change  # noqa: PLC0415  # Kafka only when needed

    _check(pipeline, change, target, pipelines, repository, verifier=verifier)
    return write_change(
        target.bootstrap, pipeline, change, signer=signer, verifier=verifier, reason=reason,
        prefix=target.prefix, kafka=target.kafka,
    )  # fmt: skip


def _check(
    pipeline: str,
    change: Change,
    target: Target,
    pipelines: Path,
    repository: Path,
    *,
    verifier: ControlVerifier,
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
    state = read_state(target.bootstrap, prefix=target.prefix, kafka=target.kafka,
                       verifier=verifier)  # fmt: skip
    routing = state.pipeline(pipeline)
    check_change(spec, ModelRepository(repository), routing, change)


def _written(record: ControlRecord) -> str:
    from modelyard.cli.control_view import when  # noqa: PLC0415

    what = describe_change(record.change)
    return f"{record.key}: {what} (seq {record.seq}, by {record.actor} at {when(record.at)})"
