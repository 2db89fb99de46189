"""Reading dead letters back: where each goes, what is re-submitted, what is skipped and why."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import pytest
from modelyard.broker.dlq import (
    REPLAY_OF,
    DeadLetter,
    Plan,
    plan_letter,
    resubmission,
    source_topic,
)
from modelyard.cli.dlq import parse_when, summary_lines
from modelyard.wire.headers import dead_letter

ORIGINAL = [("content-type", b"application/msgpack"), ("reply-to", b"yard.client.1")]
TRACE = ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")


def _letter(
    value: bytes = b"request",
    *,
    source: str = "yard.m.shout.1",
    original: list[tuple[str, bytes]] | None = None,
    max_bytes: int = 1 << 20,
) -> DeadLetter:
    dead, headers = dead_letter(
        value, ORIGINAL if original is None else original, "it raised", "model", source=source,
        max_bytes=max_bytes, stage="first", model="shout:1",
    )  # fmt: skip
    return DeadLetter("yard.m.shout.1.dlq", 0, 7, 0, b"rid", dead, [*headers, TRACE])


@pytest.mark.parametrize(
    ("source", "topic"),
    [
        ("yard.p.docs.router/1/42", "yard.p.docs.router"),
        ("pipeline docs ingress", "yard.p.docs.in"),
        ("yard.m.shout.1", "yard.m.shout.1"),
        ("not a topic at all", None),
        ("..", None),
        ("", None),
    ],
)
def test_the_source_header_names_the_topic_the_original_came_from(
    source: str, topic: str | None
) -> None:
    assert source_topic(source, "yard") == topic


def test_a_letter_goes_back_with_its_original_bytes_and_headers_only() -> None:
    letter = _letter()
    plan = plan_letter(letter, "yard")
    assert plan == Plan(letter, "yard.m.shout.1")
    key, value, headers = resubmission(letter)
    assert (key, value) == (b"rid", b"request")
    # the dlq-* headers and the trace context the stage added after them are gone
    assert headers == [*ORIGINAL, (REPLAY_OF, b"yard.m.shout.1.dlq/0/7")]
    assert plan.error == "model: it raised"


def test_a_replay_that_failed_again_is_told_apart_and_marked_afresh() -> None:
    earlier = (REPLAY_OF, b"yard.m.shout.1.dlq/0/3")
    letter = _letter(original=[*ORIGINAL, earlier])
    assert letter.replay_of == "yard.m.shout.1.dlq/0/3"
    _, _, headers = resubmission(letter)
    assert [v for k, v in headers if k == REPLAY_OF] == [b"yard.m.shout.1.dlq/0/7"]
    assert _letter().replay_of is None


def test_a_truncated_letter_is_skipped_with_its_size_and_digest() -> None:
    letter = _letter(b"x" * 5000, max_bytes=4096 + 1000)
    plan = plan_letter(letter, "yard")
    assert plan.target is None
    assert plan.skip is not None
    assert plan.skip.startswith("original truncated (5000 bytes, sha256 ")


def test_letters_that_would_reach_nobody_are_skipped() -> None:
    dispatch = _letter(original=[*ORIGINAL, ("stage", b"first")])
    inbox = _letter(source="yard.p.docs.router/0/9")
    unknown = _letter(source="somewhere else")
    assert plan_letter(dispatch, "yard").skip == (
        "a router's dispatch (stage first): replay its pipeline's DLQ"
    )
    assert plan_letter(inbox, "yard").skip == (
        "a message to a router's reply inbox: its request is over"
    )
    assert plan_letter(unknown, "yard").skip == "unknown source 'somewhere else'"


def test_a_pipeline_letter_goes_back_to_the_pipeline_ingress_under_the_prefix() -> None:
    plan = plan_letter(_letter(source="pipeline docs ingress"), "acme")
    assert plan.target == "acme.p.docs.in"


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("90s", datetime(2026, 11, 23, 11, 58, 30, tzinfo=UTC)),
        ("15m", datetime(2026, 11, 23, 11, 45, tzinfo=UTC)),
        ("2h", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
        ("1d", datetime(2026, 11, 22, 12, 0, tzinfo=UTC)),
        ("2026-11-20T08:30:00Z", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
        ("2026-11-20T08:30:00", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
    ],
)
def test_times_are_iso_or_an_age(text: str, when: datetime) -> None:
    assert parse_when(text, NOW) == when


def test_a_time_that_is_neither_is_refused() -> None:
    with pytest.raises(click.BadParameter, match="expected an ISO time"):
        parse_when("yesterday", NOW)


def test_the_summary_counts_what_was_sent_and_why_the_rest_was_skipped() -> None:
    sent = [Plan(_letter(), "yard.m.shout.1")]
    again = _letter(original=[*ORIGINAL, (REPLAY_OF, b"yard.m.shout.1.dlq/0/1")])
    sent.append(Plan(again, "yard.m.shout.1"))
    skipped = [plan_letter(_letter(b"y" * 5000, max_bytes=5000), "yard") for _ in range(2)]
    lines = summary_lines("re-submitted", sent, skipped, passed_over=3, already=1)
    assert lines == [
        "re-submitted 2 (1 had failed again after an earlier replay), skipped 2, "
        "passed over 3 older than --since, 1 already sent by an interrupted run",
        "  skipped 2: original truncated",
    ]
