"""Dead letters, read back: where each came from and whether it can be re-submitted there.

A dead letter (``wire.headers.dead_letter``) holds the original value and key, the original
headers, then the ``dlq-*`` headers that say why and where it failed. ``dlq-source`` names
where the original was consumed, in one of three forms:

- ``<topic>/<partition>/<offset>``: a message on a router's reply inbox;
- ``pipeline <name> ingress``: a caller's request to a pipeline (its ingress topic);
- ``<topic>``: a request to a model version's input topic.

Pure: ``plan_letter`` decides, ``resubmission`` builds the record to produce;
``modelyard.broker.dlq_replay`` does the reading, producing and bookkeeping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelyard.topics import pipeline_ingress_topic
from modelyard.wire.headers import H, Headers, header_value

__all__ = ["REPLAY_OF", "DeadLetter", "Plan", "plan_letter", "resubmission"]

# on a re-submitted record: the dead letter it re-submits (``<dlq topic>/<partition>/<offset>``),
# so one that fails again is told apart from a first failure, and a replay cut short knows
# what it already sent
REPLAY_OF = H.REPLAY_OF  # what the router tells a replayed request apart by

_DLQ_PREFIX = "dlq-"
_POSITION = re.compile(r"(?P<topic>[A-Za-z0-9._-]{1,249})/(?P<partition>\d+)/(?P<offset>\d+)")
_INGRESS = re.compile(r"pipeline (?P<pipeline>[A-Za-z0-9._-]+) ingress")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter topic, as consumed."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers

    @property
    def position(self) -> str:
        """Where the letter is: ``<topic>/<partition>/<offset>`` (what ``REPLAY_OF`` names)."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def original_headers(self) -> Headers:
        """The headers the original carried, less any earlier ``REPLAY_OF``."""
        return [(k, v) for k, v in _before_why(self.headers) if k.lower() != REPLAY_OF]

    def why(self, name: str) -> str | None:
        """A ``dlq-*`` header's value (e.g. ``H.DLQ_ERROR``)."""
        return header_value(self.headers, name)

    @property
    def replay_of(self) -> str | None:
        """The letter an earlier replay re-submitted, when this one is that replay failing
        again."""
        return header_value(_before_why(self.headers), REPLAY_OF)


def _before_why(headers: Headers) -> Headers:
    """The headers before the first ``dlq-*`` one: the original's (what a stage appends after
    them, its own trace context, is not the caller's)."""
    for i, (name, _) in enumerate(headers):
        if name.lower().startswith(_DLQ_PREFIX):
            return headers[:i]
    return headers


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one dead letter: re-submit it to ``target``, or skip it and say why."""

    letter: DeadLetter
    target: str | None
    skip: str | None = None

    @property
    def error(self) -> str:
        code = self.letter.why(H.DLQ_ERROR_CODE) or "?"
        message = self.letter.why(H.DLQ_ERROR) or ""
        return f"{code}: {message}" if message else code


def plan_letter(letter: DeadLetter, prefix: str) -> Plan:
    """Where ``letter`` goes back to, or why it cannot: the original bytes were cut (an
    oversize letter keeps only their start), its source is unknown, or re-submitting it there
    would reach nobody waiting (a router's dispatch, a reply to a router's inbox)."""
    truncated = letter.why(H.DLQ_TRUNCATED)
    if truncated is not None:
        sha = letter.why(H.DLQ_SHA256) or "?"
        return Plan(letter, None, f"original truncated ({truncated} bytes, sha256 {sha})")
    source = letter.why(H.DLQ_SOURCE)
    target = source_topic(source or "", prefix)
    if target is None:
        return Plan(letter, None, f"unknown source {source!r}")
    if _is_router_inbox(target, prefix):
        return Plan(letter, None, "a message to a router's reply inbox: its request is over")
    stage = header_value(letter.original_headers, H.STAGE)
    if stage is not None:  # only a router's dispatches name the hop
        return Plan(letter, None, f"a router's dispatch (stage {stage}): replay its pipeline's DLQ")
    return Plan(letter, target)


def source_topic(source: str, prefix: str) -> str | None:
    """The topic a ``dlq-source`` value names, or None."""
    if position := _POSITION.fullmatch(source):
        return position["topic"]
    if ingress := _INGRESS.fullmatch(source):
        return pipeline_ingress_topic(prefix, ingress["pipeline"])
    if _TOPIC.fullmatch(source) and source not in (".", ".."):
        return source
    return None


def _is_router_inbox(topic: str, prefix: str) -> bool:
    return topic.startswith(f"{prefix}.p.") and topic.endswith(".router")


def resubmission(letter: DeadLetter) -> tuple[bytes | None, bytes, Headers]:
    """Key, value and headers to produce: the original ones, marked as a replay of
    ``letter``."""
    headers = [*letter.original_headers, (REPLAY_OF, letter.position.encode())]
    return letter.key, letter.value, headers
