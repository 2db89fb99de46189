"""Comparing a recorded stage output with a replayed one, and counting what a replay found."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from modelyard.audit.capture import redacted_value
from modelyard.audit.store import Filters, HopPayload
from modelyard.errors import ModelError
from modelyard.model import Outcome
from modelyard.stage.replay import Difference, compare, replay_stage


def _text(*items: bytes) -> np.ndarray[Any, Any]:
    return np.array(list(items), dtype=object)


def test_equal_outputs_agree_and_the_first_differing_field_is_named() -> None:
    recorded = {"label": _text(b"POS"), "score": np.array([0.9], dtype=np.float32)}
    assert compare("r", recorded, dict(recorded)) is None
    changed = {**recorded, "label": _text(b"NEG")}
    assert compare("r", recorded, changed) == Difference("r", "label", "[b'POS']", "[b'NEG']")
    assert compare("r", recorded, {"label": _text(b"POS")}) == Difference(
        "r", "score", "[0.8999999761581421]", "(missing)"
    )


def test_a_replayed_error_disagrees_and_says_why() -> None:
    difference = compare("r", {"label": _text(b"POS")}, ModelError("it raised"))
    assert difference == Difference("r", "", "{label: [b'POS']}", "error model: it raised")


def test_numbers_agree_within_a_tolerance_only_when_one_is_given() -> None:
    recorded = {"score": np.array([0.5, 0.25], dtype=np.float32)}
    replayed = {"score": np.array([0.5001, 0.25], dtype=np.float32)}
    assert compare("r", recorded, replayed) is not None
    assert compare("r", recorded, replayed, tolerance=1e-3) is None
    assert compare("r", recorded, replayed, tolerance=1e-5) is not None
    reshaped = {"score": np.array([[0.5, 0.25]], dtype=np.float32)}
    assert compare("r", recorded, reshaped, tolerance=1.0) is not None


def test_a_redacted_recorded_value_is_compared_by_its_digest() -> None:
    secret = _text(b"card 4111")
    recorded = {"text": redacted_value("text", secret)}
    assert compare("r", recorded, {"text": secret}) is None
    assert compare("r", recorded, {"text": _text(b"card 4222")}) is not None


class _Store:
    """Hops of one stage: the kept payloads and how many hops there are in all."""

    def __init__(self, payloads: list[HopPayload], hops: int) -> None:
        self.payloads, self.hops = payloads, hops

    def query(self, filters: Filters) -> Iterator[object]:
        assert filters.limit is None  # every hop is counted, whatever the limit
        return iter([object()] * self.hops)

    def hop_payloads(self, filters: Filters, stage: str) -> Iterator[HopPayload]:
        return iter(self.payloads)


class _Echo:
    """A version that answers each input's text, upper-cased."""

    def __init__(self) -> None:
        self.seen = 0

    def run(self, inputs: Sequence[Mapping[str, Any]]) -> list[Outcome]:
        self.seen += len(inputs)
        return [{"out": _text(*(t.upper() for t in i["text"]))} for i in inputs]


def _payload(rid: str, text: bytes, out: bytes | None) -> HopPayload:
    output = None if out is None else {"out": _text(out)}
    return HopPayload(rid, {"text": _text(text)}, output, "m", "1")


def test_a_replay_counts_agreement_and_what_could_not_be_replayed() -> None:
    payloads = [
        _payload("a", b"x", b"X"),
        _payload("b", b"y", b"nope"),
        _payload("c", b"z", None),
        HopPayload("d", {"text": redacted_value("text", _text(b"s"))}, None, "m", "1"),
    ]
    runner = _Echo()
    found = replay_stage(_Store(payloads, hops=6), Filters(), "s", runner, batch=3)  # type: ignore[arg-type]
    assert (found.hops, found.digest_only, found.redacted, found.unrecorded) == (6, 2, 1, 1)
    assert (found.agree, found.disagree, found.rate) == (1, 1, 0.5)
    assert [d.request_id for d in found.samples] == ["b"]
    assert runner.seen == 3  # the redacted input was never sent


def test_a_limit_bounds_what_is_replayed_not_what_is_counted() -> None:
    payloads = [_payload(str(i), b"x", b"X") for i in range(5)]
    runner = _Echo()
    found = replay_stage(_Store(payloads, hops=5), Filters(limit=2), "s", runner, batch=2)  # type: ignore[arg-type]
    assert (found.agree, found.digest_only, runner.seen) == (2, 0, 2)
