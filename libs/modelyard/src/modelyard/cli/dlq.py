"""``modelyard dlq replay``: re-submit dead letters to where they came from, each once."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from modelyard.broker.dlq import Plan
from modelyard.errors import ModelyardError
from modelyard.wire.headers import H

__all__ = ["WHEN", "dlq_group", "kafka_config_option", "parse_when"]

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_SHOWN_ERROR = 60  # characters of an error message per line


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC unless it says otherwise), or a time ago: ``90s``, ``15m``,
    ``2h``, ``1d``."""
    now = now or datetime.now(UTC)
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        return now - timedelta(**{_UNITS[relative[2]]: float(relative[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected an ISO time (2026-11-23T10:00:00Z) or an age (15m, 2h, 1d)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class WhenType(click.ParamType):  # click < 8.4 (faust-streaming pins it) is not generic
    """A point in time: ISO 8601, or an age (``2h``)."""

    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        return value if isinstance(value, datetime) else parse_when(str(value))


WHEN = WhenType()


def _kafka_config(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if value else {}
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("expected a JSON object of librdkafka settings")
    return parsed


kafka_config_option = click.option(
    "--kafka-config", "kafka", envvar="MODELYARD_KAFKA_CONFIG", callback=_kafka_config,
    help="Extra librdkafka settings as JSON, e.g. SASL/SSL [env MODELYARD_KAFKA_CONFIG].",
)  # fmt: skip


@click.group("dlq")
def dlq_group() -> None:
    """Work with dead-letter topics (<prefix>.p.<pipeline>.dlq, <prefix>.m.<model>.<v>.dlq)."""


@dlq_group.command("replay")
@click.argument("topic")
@click.option("--since", type=WHEN, help="Pass over letters older than this (ISO time or age "
              "like 2h); they are not offered again.")  # fmt: skip
@click.option("--until", type=WHEN, help="Stop at letters newer than this; they wait for a "
              "later run [when the run starts].")  # fmt: skip
@click.option("--dry-run", is_flag=True,
              help="List what would be re-submitted and skipped; change nothing.")  # fmt: skip
@click.option("--bootstrap", envvar="MODELYARD_BOOTSTRAP", default="127.0.0.1:9092",
              show_default=True, help="Kafka bootstrap servers.")  # fmt: skip
@click.option("--topic-prefix", "--prefix", "prefix", envvar="MODELYARD_TOPIC_PREFIX",
              default="yard", show_default=True, help="Prefix of modelyard topics.")  # fmt: skip
@kafka_config_option
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the broker before giving up.")  # fmt: skip
def replay_command(
    topic: str,
    *,
    since: datetime | None,
    until: datetime | None,
    dry_run: bool,
    bootstrap: str,
    prefix: str,
    kafka: dict[str, Any],
    timeout: float,
) -> None:
    """Re-submit the dead letters of TOPIC to where they came from, each exactly once.

    Each letter's original key, value and headers go back to the topic its dlq-source names
    (a pipeline's ingress topic for <prefix>.p.<pipeline>.dlq, a model version's input topic
    for <prefix>.m.<model>.<version>.dlq), with a header modelyard-replay-of:
    <dlq topic>/<partition>/<offset>, so a letter that fails again is told apart. What was
    handled is recorded in the consumer group <prefix>.g.dlq-replay.TOPIC: running the
    command again re-submits only letters dead-lettered since, and a run killed midway
    resumes without sending any letter twice.

    Skipped, and reported: letters whose original bytes were cut (over the size limit, they
    keep only their start), letters a router dispatched to a stage (replay the pipeline's DLQ,
    which holds the caller's request), letters whose source is unknown or whose topic is gone.
    """
    from modelyard.broker.dlq_replay import ReplayOptions, replay_dead_letters  # noqa: PLC0415

    options = ReplayOptions(
        bootstrap, prefix, kafka, since_ms=_ms(since), until_ms=_ms(until), dry_run=dry_run,
        timeout_s=timeout,
    )  # fmt: skip
    try:
        summary = replay_dead_letters(topic, options)
    except ModelyardError as exc:
        raise click.ClickException(exc.message) from None
    verb = "would re-submit" if dry_run else "re-submitted"
    for plan in summary.resubmitted:
        click.echo(f"{verb:>14}  {_describe(plan)}")
    for plan in summary.already:
        click.echo(f"{'already sent':>14}  {_describe(plan)}")
    for plan in summary.skipped:
        click.echo(f"{'skipped':>14}  {_describe(plan)}  ({plan.skip})")
    for line in summary_lines(verb, summary.resubmitted, summary.skipped, summary.passed_over,
                              len(summary.already)):  # fmt: skip
        click.echo(line)


def _ms(when: datetime | None) -> int | None:
    return int(when.timestamp() * 1000) if when is not None else None


def _describe(plan: Plan) -> str:
    """``partition/offset -> topic  error  size`` of one letter."""
    letter = plan.letter
    where = plan.target or letter.why(H.DLQ_SOURCE) or "?"
    error = plan.error
    if len(error) > _SHOWN_ERROR:
        error = error[: _SHOWN_ERROR - 1] + "…"
    again = f"  (failed again: replay of {letter.replay_of})" if letter.replay_of else ""
    size = letter.why(H.DLQ_TRUNCATED) or str(len(letter.value))
    return f"{letter.partition}/{letter.offset} -> {where}  {error}  {size} B{again}"


def summary_lines(
    verb: str, resubmitted: list[Plan], skipped: list[Plan], passed_over: int, already: int
) -> list[str]:
    """The closing summary: how many re-submitted, how many skipped and why."""
    again = sum(1 for plan in resubmitted if plan.letter.replay_of)
    line = f"{verb} {len(resubmitted)}"
    if again:
        line += f" ({again} had failed again after an earlier replay)"
    line += f", skipped {len(skipped)}"
    if passed_over:
        line += f", passed over {passed_over} older than --since"
    if already:
        line += f", {already} already sent by an interrupted run"
    reasons: dict[str, int] = {}
    for plan in skipped:
        reason = _reason_kind(plan.skip or "")
        reasons[reason] = reasons.get(reason, 0) + 1
    return [line, *(f"  skipped {n}: {reason}" for reason, n in sorted(reasons.items()))]


def _reason_kind(skip: str) -> str:
    """A skip reason without its per-letter details (sizes, digests), for counting."""
    return skip.split(" (", 1)[0]
