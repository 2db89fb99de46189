"""Drift, assessments, labels and monitored values, without Kafka: the figures against scipy
computed on the raw samples, verdicts that fire on a changed distribution and not on an equal
one, and labels that count only under a verified reviewer."""

from __future__ import annotations

import random

import numpy as np
import pytest
from modelyard.audit.observe import observe
from modelyard.control.routing import GuardRule
from modelyard.errors import UnauthenticatedError
from modelyard.graph.spec import DriftPolicy
from modelyard.keys import Keyring, SigningKey
from modelyard.monitor.baselines import Baseline, build_baselines, decode_baseline, encode_baseline
from modelyard.monitor.drift import field_drifts
from modelyard.monitor.hops import Hop, WindowKey
from modelyard.monitor.judge import assess, crossed_rule
from modelyard.monitor.labels import Label, LabelJoin, encode_label, parse_label
from modelyard.monitor.sketch import ValueSketch
from modelyard.monitor.summary import WindowSummary
from modelyard.monitor.windows import Categories, WindowStats
from pydantic import ValidationError
from scipy import stats

POLICY = DriftPolicy()
ACTIVE = WindowKey("docs", "sentiment", "vader", "1", "active")
CANARY = WindowKey("docs", "sentiment", "vader", "2", "canary")
T0 = 1_767_225_600.0


def _sketch(values: list[float]) -> ValueSketch:
    sketch = ValueSketch()
    for v in values:
        sketch.add(v)
    return sketch


def _labels(counts: dict[str, int]) -> Categories:
    return Categories({k: float(v) for k, v in counts.items()})


def test_categorical_drift_is_scipys_chi_squared_and_the_psi_of_the_proportions() -> None:
    now, ref = {"positive": 180, "neutral": 10, "negative": 10}, {"positive": 70, "neutral": 60,
                                                                   "negative": 70}  # fmt: skip
    (drift,) = field_drifts({"label": _labels(now)}, {"label": _labels(ref)}, POLICY)
    table = np.array([[10, 10, 180], [70, 60, 70]])  # sorted categories
    assert drift.p_value == pytest.approx(stats.chi2_contingency(table).pvalue)
    p, q = table[0] / 200, table[1] / 200
    assert drift.psi == pytest.approx(float(np.sum((p - q) * np.log(p / q))))
    assert drift.test == "chi2"
    assert drift.drifted


def test_equal_distributions_do_not_drift() -> None:
    rng = random.Random(5)
    draw = [rng.choice(["positive", "neutral", "negative"]) for _ in range(600)]
    a = {c: draw[:300].count(c) for c in set(draw)}
    b = {c: draw[300:].count(c) for c in set(draw)}
    x = [rng.gauss(0.2, 0.3) for _ in range(300)]
    y = [rng.gauss(0.2, 0.3) for _ in range(300)]
    drifts = field_drifts(
        {"label": _labels(a), "score": _sketch(x)}, {"label": _labels(b), "score": _sketch(y)},
        POLICY,
    )  # fmt: skip
    assert [d.field for d in drifts] == ["label", "score"]
    assert not any(d.drifted for d in drifts), drifts


def test_numeric_drift_is_a_ks_test_on_the_sketch_within_its_accuracy() -> None:
    rng = random.Random(7)
    x = [rng.gauss(0.6, 0.2) for _ in range(400)]  # includes negative values
    y = [rng.gauss(0.0, 0.3) for _ in range(400)]
    (drift,) = field_drifts({"s": _sketch(x)}, {"s": _sketch(y)}, POLICY)
    exact = stats.ks_2samp(x, y)
    assert drift.test == "ks"
    assert drift.drifted
    assert drift.p_value < 1e-20
    assert exact.pvalue < 1e-20
    assert drift.psi > POLICY.psi


def test_too_few_values_give_no_verdict() -> None:
    few = _labels({"positive": POLICY.min_samples - 1})
    assert field_drifts({"label": few}, {"label": _labels({"negative": 500})}, POLICY) == []


def test_the_p_value_is_adjusted_for_the_fields_judged_together() -> None:
    a, b = _labels({"x": 60, "y": 40}), _labels({"x": 40, "y": 60})
    (alone,) = field_drifts({"f": a}, {"f": b}, POLICY)
    two = field_drifts({"f": a, "g": a}, {"f": b, "g": b}, POLICY)
    assert two[0].p_value == pytest.approx(min(1.0, 2 * alone.p_value))


def _window(key: WindowKey, labels: dict[str, int], latencies: list[float]) -> WindowSummary:
    stats_ = WindowStats()
    for n, (label, count) in enumerate(labels.items()):
        for i in range(count):
            stats_.add(Hop(key, T0 + 1, "ok", latencies[(n + i) % len(latencies)],
                           observed={"label": label}))  # fmt: skip
    return WindowSummary(key, T0, 60.0, stats_, {"a/0": 1})


def test_a_canary_is_judged_against_the_active_version_of_its_window() -> None:
    active = _window(ACTIVE, {"positive": 50, "negative": 50}, [10.0, 20.0])
    canary = _window(CANARY, {"positive": 100}, [40.0, 80.0])
    judged = {a.key: a for a in assess([active, canary], {}, lambda _: POLICY)}
    assert judged[CANARY].reference == "active vader:1"
    assert judged[CANARY].drifted
    assert judged[CANARY].p99_ratio == pytest.approx(4.0, rel=0.03)
    assert judged[ACTIVE].reference is None
    assert judged[ACTIVE].drift == ()
    psi = GuardRule(metric="drift_psi", max=0.25)
    assert crossed_rule(judged[CANARY], [psi]) == (psi, judged[CANARY].metric("drift_psi"))
    assert crossed_rule(judged[ACTIVE], [psi]) is None  # the active version is never withdrawn
    too_many = GuardRule(metric="drift_psi", max=0.25, min_requests=101)
    assert crossed_rule(judged[CANARY], [too_many]) is None


def test_an_identical_canary_crosses_no_rule() -> None:
    active = _window(ACTIVE, {"positive": 50, "negative": 50}, [10.0, 20.0])
    canary = _window(CANARY, {"positive": 50, "negative": 50}, [10.0, 20.0])
    (judged,) = [a for a in assess([active, canary], {}, lambda _: POLICY) if a.key == CANARY]
    rules = [GuardRule(metric="drift_psi", max=0.25), GuardRule(metric="drift_p_value", min=0.01),
             GuardRule(metric="p99_latency_ratio", max=1.5)]  # fmt: skip
    assert crossed_rule(judged, rules) is None


def test_the_active_version_is_judged_against_its_signed_baseline() -> None:
    key = SigningKey.generate("ops")
    ring = Keyring([key.public_entry("operator", ["docs"])])
    (baseline,) = build_baselines(
        [_window(ACTIVE, {"positive": 50, "negative": 50}, [10.0])], "docs", 1
    )
    _, value = encode_baseline(baseline, key)
    restored = decode_baseline(value, ring)
    assert restored.saved_by == "ops"
    assert restored.version == "1"
    later = _window(ACTIVE, {"negative": 100}, [10.0])
    (judged,) = assess([later], {("docs", "sentiment"): restored}, lambda _: POLICY)
    assert judged.reference == "baseline vader:1"
    assert judged.drifted
    stranger = SigningKey.generate("ops")  # the same name, another key
    with pytest.raises(UnauthenticatedError):
        decode_baseline(encode_baseline(baseline, stranger)[1], ring)


def test_a_baseline_needs_a_key_allowed_the_pipeline() -> None:
    key = SigningKey.generate("other-team")
    ring = Keyring([key.public_entry("operator", ["billing"])])
    baseline = Baseline("docs", "sentiment", "vader", "1", T0, T0 + 60, 1, {})
    with pytest.raises(Exception, match="may not"):
        decode_baseline(encode_baseline(baseline, key)[1], ring)


def test_labels_count_for_every_version_that_answered_under_the_signing_reviewer() -> None:
    reviewer = SigningKey.generate("alice")
    ring = Keyring([reviewer.public_entry("writer")])
    join = LabelJoin(capacity=10)
    join.remember(Hop(ACTIVE, T0, "ok", 1.0, observed={"label": "negative"}, request_id="r1"))
    join.remember(Hop(CANARY, T0, "ok", 1.0, observed={"label": "positive"}, request_id="r1"))
    label = parse_label(encode_label(Label("r1", "sentiment", "negative", T0, "x"), reviewer), ring)
    assert label.reviewer == "alice"  # the key's name, not what the label said
    assert sorted(join.verdicts(label)) == [(ACTIVE, True), (CANARY, False)]
    unknown = Label("r2", "sentiment", "negative", T0, "alice")
    assert join.verdicts(unknown) == []
    forged = encode_label(label, SigningKey.generate("alice"))
    with pytest.raises(UnauthenticatedError):
        parse_label(forged, ring)


def test_label_memory_is_bounded() -> None:
    join = LabelJoin(capacity=2)
    for n in range(3):
        join.remember(Hop(ACTIVE, T0, "ok", 1.0, observed={"label": "x"}, request_id=f"r{n}"))
    assert join.verdicts(Label("r0", "sentiment", "x", T0, "a")) == []
    assert join.verdicts(Label("r2", "sentiment", "x", T0, "a")) == [(ACTIVE, True)]


def test_observe_reads_labels_numbers_and_lengths_and_never_fails() -> None:
    monitored = {"label": "categorical", "scores": "numeric", "input.text": "length",
                 "probability": "numeric", "missing": "numeric", "text": "numeric"}  # fmt: skip
    outputs = {"label": np.array([b"negative"], dtype=object),
               "scores": np.array([0.1, float("nan"), 0.7], dtype=np.float32),
               "probability": np.array([0.5]),
               "text": np.array([b"not a number"], dtype=object)}  # fmt: skip
    observed = observe(monitored, {"text": np.array(["héllo".encode()], dtype=object)}, outputs)
    assert observed == {"label": "negative", "scores.0": pytest.approx(0.1),
                        "scores.2": pytest.approx(0.7), "input.text": 6.0,
                        "probability": 0.5}  # fmt: skip
    assert observe({}, None, outputs) is None


def test_a_guard_rule_has_exactly_one_bound_and_old_records_serialise_as_signed() -> None:
    with pytest.raises(ValidationError):
        GuardRule(metric="drift_psi")
    with pytest.raises(ValidationError):
        GuardRule(metric="drift_psi", max=1, min=0)
    old = GuardRule(metric="error_rate", max=0.1)
    assert "min" not in old.model_dump(mode="json")  # the signed bytes of old records
    low = GuardRule(metric="shadow_agreement", min=0.9)
    assert low.crossed(0.8)
    assert not low.crossed(0.95)
    assert low.bound == "< 0.9"


def test_the_monitor_passes_the_services_kafka_security_settings_to_faust() -> None:
    import faust  # noqa: PLC0415  # only this test needs it
    from modelyard.monitor.app import faust_credentials  # noqa: PLC0415

    assert faust_credentials({}) is None
    assert faust_credentials({"security.protocol": "PLAINTEXT", "linger.ms": 5}) is None
    sasl = faust_credentials({
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "monitor", "sasl.password": "s3cret",
    })  # fmt: skip
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.username, sasl.password, sasl.mechanism.value, sasl.protocol.value) == (
        "monitor",
        "s3cret",
        "SCRAM-SHA-512",
        "SASL_PLAINTEXT",
    )
    over_tls = faust_credentials({"security.protocol": "SASL_SSL", "sasl.username": "m",
                                  "sasl.password": "p"})  # fmt: skip
    assert isinstance(over_tls, faust.SASLCredentials)
    assert over_tls.protocol.value == "SASL_SSL"
    assert over_tls.mechanism.value == "PLAIN"
    assert isinstance(faust_credentials({"security.protocol": "SSL"}), faust.SSLCredentials)
