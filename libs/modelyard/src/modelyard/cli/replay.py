"""``modelyard replay``: an offline shadow. Re-run a stage's captured inputs through another
version and print how often it agrees with what was recorded."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from modelyard.cli.dlq import WHEN, kafka_config_option
from modelyard.errors import ModelyardError, error_class
from modelyard.model import Outcome

if TYPE_CHECKING:
    from modelyard.stage.replay import Agreement

__all__ = ["replay_command"]


@click.command("replay")
@click.option("--store", envvar="MODELYARD_AUDIT_STORE", required=True,
              help="Audit store: sqlite:///PATH, a file path, or postgresql://... "
              "[env MODELYARD_AUDIT_STORE].")  # fmt: skip
@click.option("--stage", required=True, help="The pipeline stage whose inputs are replayed.")
@click.option("--against", required=True, metavar="MODEL:VERSION",
              help="The version to run them through, e.g. sentiment:1.")  # fmt: skip
@click.option("--pipeline", help="Only hops of this pipeline.")
@click.option("--since", type=WHEN, help="Only hops dispatched at or after this (ISO or 2h).")
@click.option("--until", type=WHEN, help="Only hops dispatched before this (ISO or 2h).")
@click.option("--principal", help="Only requests of this caller.")
@click.option("--version", "recorded_version",
              help="Only hops served by this version of the stage's model.")  # fmt: skip
@click.option("--role", type=click.Choice(["active", "canary", "shadow"]),
              help="Only hops in this role [every role].")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), help="Replay at most this many inputs.")
@click.option("--in-process", is_flag=True,
              help="Load the version from --repository into this process instead of sending "
              "the inputs to its deployed workers over Kafka.")  # fmt: skip
@click.option("--repository", type=click.Path(file_okay=False, path_type=Path),
              default=Path("models"), show_default=True,
              help="Model repository, for --in-process.")  # fmt: skip
@click.option("--tolerance", type=click.FloatRange(min=0),
              help="Numeric outputs agree within this absolute difference [exact].")  # fmt: skip
@click.option("--sample", type=click.IntRange(min=0), default=10, show_default=True,
              help="Differences to print.")  # fmt: skip
@click.option("--bootstrap", envvar="MODELYARD_BOOTSTRAP", default="127.0.0.1:9092",
              show_default=True, help="Kafka bootstrap servers.")  # fmt: skip
@click.option("--topic-prefix", "--prefix", "prefix", envvar="MODELYARD_TOPIC_PREFIX",
              default="yard", show_default=True, help="Prefix of modelyard topics.")  # fmt: skip
@kafka_config_option
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for each reply over Kafka.")  # fmt: skip
def replay_command(**options: Any) -> None:
    """Re-run the captured inputs of --stage through --against and compare the outputs.

    Reads the hops of STAGE that match the filters from the audit store, oldest first, with
    their captured input and output fields (pipelines whose spec says audit: {payloads:
    full}). Each input goes to MODEL:VERSION: by default over Kafka to its deployed workers
    (<prefix>.m.MODEL.VERSION, replies on a private topic); with --in-process, loaded from
    --repository as `modelyard serve` would. Prints how many agree with the recorded output
    (same bytes on the wire, or within --tolerance for numbers; redacted values compared by
    digest) and a sample of differences. Inputs captured only as digests, or with a redacted
    field, cannot be replayed: they are counted and reported.
    """
    from modelyard.audit.store import Filters, open_store  # noqa: PLC0415  # keeps --help fast
    from modelyard.stage.replay import replay_stage  # noqa: PLC0415

    filters = Filters(
        pipeline=options["pipeline"], principal=options["principal"],
        version=options["recorded_version"], role=options["role"], since=options["since"],
        until=options["until"], limit=options["limit"],
    )  # fmt: skip
    runner, how = _runner(options)
    try:
        with open_store(options["store"]) as store:
            agreement = replay_stage(
                store, filters, options["stage"], runner, tolerance=options["tolerance"],
                sample=options["sample"],
            )  # fmt: skip
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None
    except TimeoutError as exc:
        raise click.ClickException(f"{exc}: is {options['against']} running? ({how})") from None
    finally:
        runner.close()
    for line in report_lines(agreement, options["stage"], options["against"], how):
        click.echo(line)


def _runner(options: Mapping[str, Any]) -> tuple[Any, str]:
    from modelyard.repository.store import parse_ref  # noqa: PLC0415

    try:
        model, version = parse_ref(options["against"])
        if version is None:
            raise click.BadParameter("name a version: MODEL:VERSION", param_hint="--against")
        if options["in_process"]:
            from modelyard.stage.replay import InProcessRunner  # noqa: PLC0415

            return InProcessRunner(options["repository"], options["against"]), "in process"
        return _kafka_runner(options, model, version), "over Kafka"
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None


def _kafka_runner(options: Mapping[str, Any], model: str, version: str) -> KafkaRunner:
    from modelyard.broker import partition_counts  # noqa: PLC0415
    from modelyard.topics import model_input_topic  # noqa: PLC0415

    topic = model_input_topic(options["prefix"], model, version)
    kafka = options["kafka"]
    if not partition_counts(options["bootstrap"], [topic], kafka).get(topic):
        raise click.ClickException(
            f"{model}:{version} is not deployed here (no topic {topic}); "
            "use --in-process to load it from --repository"
        )
    return KafkaRunner(options["bootstrap"], topic, kafka, options["timeout"])


class KafkaRunner:
    """Each input as a request to the version's input topic, as a router dispatches it;
    replies come back on a private topic (``modelyard.client.StageClient``)."""

    def __init__(
        self, bootstrap: str, topic: str, kafka: Mapping[str, Any], timeout_s: float
    ) -> None:
        from modelyard.client import StageClient  # noqa: PLC0415

        self.topic, self._timeout_s = topic, timeout_s
        self._client = StageClient(bootstrap, kafka=kafka)
        self._ids = (f"replay-{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())

    def run(self, inputs: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        from modelyard.wire import Envelope  # noqa: PLC0415

        deadline_ms = int((time.time() + self._timeout_s) * 1000)
        ids = []
        for fields in inputs:  # all sent first: the workers batch them
            ids.append(next(self._ids))
            envelope = Envelope(ids[-1], dict(fields), caller="modelyard-replay",
                                deadline_ms=deadline_ms)  # fmt: skip
            self._client.send(self.topic, envelope)
        return [self._outcome(request_id) for request_id in ids]

    def _outcome(self, request_id: str) -> Outcome:
        reply = self._client.wait(request_id, self._timeout_s)
        if reply.error is not None:
            return error_class(reply.error.code)(reply.error.message)
        return dict(reply.fields)

    def close(self) -> None:
        self._client.close()


def report_lines(agreement: Agreement, stage: str, against: str, how: str) -> list[str]:
    """What a replay prints: agreement, what could not be compared, sample differences."""
    rate = agreement.rate
    shown = f"{rate:.1%}" if rate is not None else "n/a"
    lines = [
        f"replayed stage {stage} through {against} ({how}): {agreement.hops} hops matched",
        f"n={agreement.compared} agree={agreement.agree} disagree={agreement.disagree} "
        f"rate={shown}",
    ]
    if agreement.digest_only:
        lines.append(f"not replayable: {agreement.digest_only} inputs captured as digests only")
    if agreement.redacted:
        lines.append(f"not replayable: {agreement.redacted} inputs with a redacted field")
    if agreement.unrecorded:
        lines.append(f"not compared: {agreement.unrecorded} hops recorded no output")
    if agreement.samples:
        lines.append(f"differences (first {len(agreement.samples)}):")
    for d in agreement.samples:
        where = f" {d.field}" if d.field else ""
        lines.append(f"  {d.request_id}{where}: recorded {d.recorded}  replayed {d.replayed}")
    return lines
