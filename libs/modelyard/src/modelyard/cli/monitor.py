"""`modelyard monitor`: windowed SLOs per model version over the audit topic; `monitor show`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["label_command", "monitor_group"]

_BOOTSTRAP = click.option("--bootstrap", envvar="MODELYARD_BOOTSTRAP", default="127.0.0.1:9092",
                          show_default=True, help="Kafka bootstrap servers.")  # fmt: skip
_PREFIX = click.option("--topic-prefix", envvar="MODELYARD_TOPIC_PREFIX", default="yard",
                       show_default=True)  # fmt: skip


@click.group("monitor", invoke_without_command=True)
@_BOOTSTRAP
@_PREFIX
@click.option("--window-s", envvar="MODELYARD_WINDOW_S", type=float, default=60.0,
              show_default=True, help="Tumbling window size, in s.")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--metrics-port", type=int, default=0, show_default=True, help="0: any free port.")
@click.option("--spec", "specs", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A pipeline spec whose drift thresholds apply (repeatable; others: "
                   "defaults).")  # fmt: skip
@click.option("--keyring", envvar="MODELYARD_KEYRING", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Keyring control records, baselines and labels are verified "
                   "against.")  # fmt: skip
@click.option("--insecure-control", is_flag=True,
              help="No keyring: take control records, baselines and labels unverified "
                   "(development only).")  # fmt: skip
@click.option("--writer-key", envvar="MODELYARD_WRITER_KEY", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Writer key signing the guards' withdrawals; none: a tripped guard only "
                   "says so.")  # fmt: skip
@click.pass_context
def monitor_group(ctx: click.Context, /, **options: Any) -> None:
    """Window the audit topic per (pipeline, stage, model, version, role).

    A faust-streaming app in consumer group <prefix>.g.monitor (run several to share the
    partitions): requests, errors by code, latency p50/p95/p99 (DDSketch, 1 % relative error),
    shadow agreement, the distributions of the values the specs' `monitor:` names and label
    accuracy per tumbling window, published as JSON to <prefix>.monitor and as Prometheus
    gauges on /metrics. Each closed window is judged: a canary or shadow against the active
    version of the same window, the active version against its saved baseline (drift: PSI and
    chi-squared / KS p-values; p99 over the active's). A stage's monitor guard rules
    (`modelyard guard --drift-psi ...`) withdraw a canary or shadow that crosses them, by a
    control record the --writer-key signs. See docs/monitor.md.
    """
    if ctx.invoked_subcommand is None:
        _run(options)


def _run(options: dict[str, Any]) -> None:
    from faust.worker import Worker  # noqa: PLC0415  # keeps --help fast
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from modelyard.broker.admin import create_topics, partition_counts  # noqa: PLC0415
    from modelyard.kafka.process import announce_ready  # noqa: PLC0415
    from modelyard.monitor.app import MonitorApp  # noqa: PLC0415
    from modelyard.monitor.baselines import baseline_topic  # noqa: PLC0415
    from modelyard.monitor.labels import labels_topic  # noqa: PLC0415
    from modelyard.monitor.metrics import MonitorMetrics  # noqa: PLC0415
    from modelyard.monitor.settings import MonitorSettings, monitor_topic  # noqa: PLC0415
    from modelyard.telemetry import (  # noqa: PLC0415
        configure_logging_from_env,
        start_http_server,
        stop_http_server,
    )
    from modelyard.topics import audit_topic  # noqa: PLC0415

    configure_logging_from_env()
    settings = MonitorSettings(
        bootstrap=options["bootstrap"], topic_prefix=options["topic_prefix"],
        window_s=options["window_s"], metrics_host=options["metrics_host"],
        metrics_port=options["metrics_port"],
    )  # fmt: skip
    prefix, extra = settings.topic_prefix, settings.kafka_extra()
    (settings.state_dir / "monitor").mkdir(parents=True, exist_ok=True)  # faust makes one level
    audit = audit_topic(prefix)
    partitions = partition_counts(settings.bootstrap, [audit], extra)[audit]
    if not partitions:
        raise click.ClickException(f"topic {audit} does not exist (start the routers first)")
    create_topics(settings.bootstrap, [monitor_topic(prefix)], partitions=1, kafka=extra)
    create_topics(settings.bootstrap, [labels_topic(prefix)], partitions=partitions, kafka=extra)
    # before its follower starts: a client that asked for a missing topic may not see it appear
    create_topics(settings.bootstrap, [baseline_topic(prefix)], partitions=1,
                  config={"cleanup.policy": "compact"}, kafka=extra)  # fmt: skip
    registry = CollectorRegistry()
    state: dict[str, bool] = {"ready": False}
    http, port = start_http_server(settings.metrics_host, settings.metrics_port, registry,
                                   lambda: dict(state))  # fmt: skip

    def ready() -> None:
        state["ready"] = True
        announce_ready("monitor", group=f"{prefix}.g.monitor", audit=audit,
                       metrics=f"{settings.metrics_host}:{port}")  # fmt: skip

    judging, services = _judging(options, settings, registry)
    monitor = MonitorApp(
        settings, partitions, MonitorMetrics(registry), on_ready=ready, judging=judging
    )
    level = os.environ.get("MODELYARD_LOG_LEVEL", "WARNING")
    worker = Worker(monitor.app, loglevel=level, quiet=True, redirect_stdouts=False,
                    override_logging=False)  # fmt: skip
    if not sys.stdout.isatty():
        worker.spinner = None  # its terminal codes would land in whatever reads the output
    try:
        worker.execute_from_commandline()
    finally:
        if judging.guard is not None:
            judging.guard.join()
        for service in services:
            service.stop()
        stop_http_server(http)


def _judging(options: dict[str, Any], settings: Any, registry: Any) -> tuple[Any, list[Any]]:
    """What the judge needs (specs' policies, baselines, guard, keyring) and the threads that
    follow the control and baselines topics."""
    from modelyard.cli.control_options import follower_verifier  # noqa: PLC0415
    from modelyard.control.follower import ControlFollower  # noqa: PLC0415
    from modelyard.graph.load import load_spec  # noqa: PLC0415
    from modelyard.keys import SigningKey  # noqa: PLC0415
    from modelyard.monitor.app import Judging  # noqa: PLC0415
    from modelyard.monitor.baselines import BaselineFollower  # noqa: PLC0415
    from modelyard.monitor.guard import withdrawing_monitor_guard  # noqa: PLC0415

    verifier = follower_verifier(options["keyring"], options["insecure_control"])
    bootstrap, prefix, extra = settings.bootstrap, settings.topic_prefix, settings.kafka_extra()
    specs = [load_spec(path) for path in options["specs"]]
    writer = SigningKey.load(options["writer_key"]) if options["writer_key"] else None
    follower = ControlFollower(bootstrap, prefix=prefix, verifier=verifier, registry=registry,
                               kafka=extra)  # fmt: skip
    baselines = BaselineFollower(bootstrap, prefix, verifier.keyring, extra)
    follower.start()
    baselines.start()
    guard = withdrawing_monitor_guard(
        bootstrap, lambda: follower.state, prefix=prefix, kafka=extra, registry=registry,
        signer=writer, verifier=verifier,
    )  # fmt: skip
    judging = Judging(
        policies={spec.pipeline: spec.drift for spec in specs},
        baselines=lambda: baselines.baselines, guard=guard, keyring=verifier.keyring,
    )  # fmt: skip
    return judging, [follower, baselines]


@monitor_group.command("show")
@click.argument("pipeline")
@_BOOTSTRAP
@_PREFIX
@click.option("--last", type=click.IntRange(min=1), default=10, show_default=True,
              help="Windows per stage and version (the sparklines' length).")  # fmt: skip
def show_command(pipeline: str, bootstrap: str, topic_prefix: str, last: int) -> None:
    """Print the last windows of PIPELINE per stage and version, from <prefix>.monitor."""
    from modelyard.monitor.settings import monitor_topic  # noqa: PLC0415
    from modelyard.monitor.show import (  # noqa: PLC0415
        assessments_of,
        read_records,
        render,
        summaries_of,
    )

    records = list(read_records(bootstrap, monitor_topic(topic_prefix)))
    click.echo(render(list(summaries_of(records)), pipeline, last, assessments_of(records)))


@monitor_group.group("baseline")
def baseline_group() -> None:
    """Save the reference the active versions are judged against."""


@baseline_group.command("save")
@click.argument("pipeline")
@_BOOTSTRAP
@_PREFIX
@click.option("--window", "last", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many of the latest closed windows of each stage's active version to "
                   "merge into its baseline.")  # fmt: skip
@click.option("--stage", "stages", multiple=True, help="Only these stages (repeatable).")
@click.option("--key", "key_path", envvar="MODELYARD_OPERATOR_KEY",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Operator key allowed the pipeline that signs the baseline [env "
                   "MODELYARD_OPERATOR_KEY; default modelyard up's admin key].")  # fmt: skip
def baseline_save_command(pipeline: str, **options: Any) -> None:
    """Save PIPELINE's baselines: per stage, the monitored values of its active version's
    latest --window closed windows, signed, on <prefix>.monitor.baselines. The monitor judges
    each later window of the active version against it (drift; docs/monitor.md#drift)."""
    from confluent_kafka import Producer  # noqa: PLC0415

    from modelyard.broker.admin import create_topics  # noqa: PLC0415
    from modelyard.monitor.baselines import (  # noqa: PLC0415
        baseline_topic,
        build_baselines,
        encode_baseline,
    )
    from modelyard.monitor.settings import monitor_topic  # noqa: PLC0415
    from modelyard.monitor.show import read_summaries  # noqa: PLC0415
    from modelyard.monitor.summary import combine  # noqa: PLC0415

    key = _operator_key(options["key_path"])
    bootstrap, topic_prefix, stages = (
        options["bootstrap"],
        options["topic_prefix"],
        options["stages"],
    )
    windows = combine(read_summaries(bootstrap, monitor_topic(topic_prefix)))
    baselines = [b for b in build_baselines(windows, pipeline, options["last"])
                 if not stages or b.stage in stages]  # fmt: skip
    if not baselines:
        raise click.ClickException(
            f"no closed window of {pipeline}'s active versions with monitored values yet"
        )
    topic = baseline_topic(topic_prefix)
    create_topics(bootstrap, [topic], partitions=1, config={"cleanup.policy": "compact"})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for baseline in baselines:
        record_key, value = encode_baseline(baseline, key)
        producer.produce(topic, value, record_key)
        fields = ", ".join(sorted(baseline.fields))
        click.echo(f"{baseline.stage}: {baseline.model}:{baseline.version}, "
                   f"{baseline.requests} requests, fields {fields}")  # fmt: skip
    if producer.flush(30):
        raise click.ClickException(f"the baselines were not acknowledged by {bootstrap}")


def _operator_key(path: Path | None) -> Any:
    from modelyard.cli.control_options import DEFAULT_KEY  # noqa: PLC0415
    from modelyard.keys import SigningKey  # noqa: PLC0415

    chosen = path or (DEFAULT_KEY if DEFAULT_KEY.exists() else None)
    if chosen is None:
        raise click.UsageError("give --key (MODELYARD_OPERATOR_KEY): the key that signs")
    return SigningKey.load(chosen)


@click.command("label")
@click.argument("request_id")
@click.argument("stage")
@click.argument("value")
@click.option("--field", help="The monitored output judged [the stage's one categorical].")
@_BOOTSTRAP
@_PREFIX
@click.option("--key", "key_path", envvar="MODELYARD_OPERATOR_KEY",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Your key in the keyring: the label's reviewer is its name [env "
                   "MODELYARD_OPERATOR_KEY; default modelyard up's admin key].")  # fmt: skip
def label_command(request_id: str, stage: str, value: str, **options: Any) -> None:
    """Say that STAGE's right answer for REQUEST_ID is VALUE (e.g. `modelyard label r1
    sentiment negative`): a signed label on <prefix>.labels that the monitor joins with the
    versions that answered, for accuracy per version and window."""
    from confluent_kafka import Producer  # noqa: PLC0415

    from modelyard.monitor.labels import Label, encode_label, labels_topic  # noqa: PLC0415

    key = _operator_key(options["key_path"])
    bootstrap = options["bootstrap"]
    label = Label(request_id, stage, value, time.time(), key.name, options["field"])
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    topic = labels_topic(options["topic_prefix"])
    producer.produce(topic, encode_label(label, key), request_id.encode())
    if producer.flush(30):
        raise click.ClickException(f"the label was not acknowledged by {bootstrap}")
    click.echo(f"labelled {request_id} {stage} = {value!r} as {key.name}")
