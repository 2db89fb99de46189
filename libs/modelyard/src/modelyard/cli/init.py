"""``modelyard init``: the one-off set-up of a cluster, for deployments (compose, Kubernetes)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from modelyard.stack import StackSettings

__all__ = ["init_command"]


@click.command("init")
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Pipeline spec to set up (repeatable)  [default: pipelines/docs.yaml]",
)
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="MODELYARD_REPOSITORY",
    help="Model repository root [env MODELYARD_REPOSITORY]  [default: models]",
)
@click.option(
    "--bootstrap",
    envvar="MODELYARD_BOOTSTRAP",
    default="127.0.0.1:9092",
    show_default=True,
    help="Kafka bootstrap servers [env MODELYARD_BOOTSTRAP].",
)
@click.option(
    "--topic-prefix",
    envvar="MODELYARD_TOPIC_PREFIX",
    help="Prefix of every modelyard topic [env MODELYARD_TOPIC_PREFIX]  [default: yard]",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help="Partitions of the pipeline and model topics it creates  [default: 4]",
)
@click.option(
    "--version",
    "versions",
    multiple=True,
    metavar="STAGE=VERSION",
    help="Initial version of a stage (or PIPELINE.STAGE) with none yet; else the latest.",
)
@click.option(
    "--no-topics",
    is_flag=True,
    help="Create no topics (they are managed elsewhere, e.g. Strimzi KafkaTopic resources).",
)
@click.option(
    "--keys-dir",
    envvar="MODELYARD_KEYS_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".modelyard/up"),
    show_default=True,
    help="Where the keyring and the admin and router keys are (created on first use; share "
    "it with routers as MODELYARD_KEYRING / MODELYARD_WRITER_KEY) [env MODELYARD_KEYS_DIR].",
)
@click.option("--wait-s", type=float, default=60.0, show_default=True,
              help="How long to wait for the cluster to answer.")  # fmt: skip
def init_command(
    versions: tuple[str, ...], no_topics: bool, keys_dir: Path, wait_s: float, **options: Any
) -> None:
    """Create the topics and roll out the first versions on a running Kafka cluster.

    What `modelyard up` does before it starts any process, for deployments whose processes run
    elsewhere (docker compose, Kubernetes): every pipeline's topics, the model versions' input
    and dead-letter topics, the audit and control topics (unless --no-topics), then one rollout
    record per stage that has no active version yet (--version, else the model's latest
    version in the repository), after checking the pipeline's tensor contract, signed by the
    admin key of --keys-dir (keyring.yaml, keys/admin.key, keys/router.key: created on first
    use). Safe to run again: existing topics and keys are kept and stages already routed are
    left alone.
    """
    from modelyard.errors import ModelyardError  # noqa: PLC0415
    from modelyard.stack import StackSettings  # noqa: PLC0415
    from modelyard.stack.plan import parse_versions  # noqa: PLC0415
    from modelyard.telemetry import configure_logging  # noqa: PLC0415

    given = {k: v for k, v in options.items() if v not in (None, ())}
    try:
        settings = StackSettings(**given, versions=parse_versions(versions))
    except ModelyardError as exc:
        raise click.UsageError(exc.message) from None
    configure_logging(json=None, level="INFO")
    for line in _init(settings, topics=not no_topics, keys_dir=keys_dir, wait_s=wait_s):
        click.echo(line)


def _init(settings: StackSettings, *, topics: bool, keys_dir: Path, wait_s: float) -> list[str]:
    """Topics (unless ``topics`` is false), then the first rollouts; a line per pipeline."""
    from modelyard.broker import wait_for_kafka  # noqa: PLC0415
    from modelyard.control.topic import read_state  # noqa: PLC0415
    from modelyard.control.verify import ControlVerifier  # noqa: PLC0415
    from modelyard.graph import load_spec  # noqa: PLC0415
    from modelyard.keys import SigningKey, ensure_local_keys  # noqa: PLC0415
    from modelyard.repository.store import ModelRepository  # noqa: PLC0415
    from modelyard.stack.setup import bootstrap_control, create_stack_topics  # noqa: PLC0415

    bootstrap = str(settings.bootstrap)
    try:
        wait_for_kafka(bootstrap, timeout_s=wait_s)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    specs = [load_spec(path) for path in settings.pipelines]
    repo = ModelRepository(settings.repository.absolute())
    if topics:
        create_stack_topics(bootstrap, settings, specs, repo)
    keys = ensure_local_keys(keys_dir)
    verifier = ControlVerifier.from_file(keys.keyring)
    admin = SigningKey.load(keys.admin_key)
    bootstrap_control(bootstrap, settings, specs, repo, signer=admin, verifier=verifier)
    state = read_state(bootstrap, prefix=settings.topic_prefix, verifier=verifier)
    lines = []
    for spec in specs:
        routing = state.pipeline(spec.pipeline)
        active = " ".join(f"{name}={routing.stage(name).active}" for name in spec.stages)
        lines.append(f"modelyard init: {spec.pipeline} on {bootstrap}: {active}")
    return lines
