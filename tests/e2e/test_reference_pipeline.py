"""The reference pipeline end to end: the stack as `modelyard up` starts it, real models.

OCR → language ID → translate (when not English and supported) → sentiment, with the router
following the real control topic while the tests change versions under traffic.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from modelyard.audit import HopRecord
from modelyard.audit.reader import read_request_records
from modelyard.control import (
    CanaryChange,
    Rollback,
    Rollout,
    Shadow,
    ShadowChange,
    StageRouting,
    should_shadow,
)
from modelyard.control.topic import write_change
from modelyard.gateway.blocking import BlockingGateway, Submission
from modelyard.stack import Stack
from modelyard.topics import (
    audit_topic,
    pipeline_inbox_topic,
    pipeline_results_topic,
    pipeline_shadow_topic,
)
from modelyard.wire import Envelope, decode_envelope
from modelyard_ocr.corpus import CORPUS
from modelyard_ocr.samples import render

from tests.support.kafka_io import Collector, produce_all
from tests.support.keys import admin, keys_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
IMAGES = {lang: render(CORPUS[lang][i], seed=i) for i, lang in enumerate(CORPUS)}


class Docs:
    def __init__(self, stack: Stack, gateway: BlockingGateway, prefix: str) -> None:
        self.stack, self.gateway, self.prefix = stack, gateway, prefix

    def change(self, change: Any) -> None:
        """Write ``change`` and wait until the router applies it (its control-seq gauge)."""
        record = write_change(
            self.stack.bootstrap, "docs", change, signer=admin(), prefix=self.prefix
        )
        metrics = f"http://{self.stack.routers['docs']['metrics']}/metrics"
        deadline = time.monotonic() + 30
        while _router_seq(metrics) < record.seq:
            assert time.monotonic() < deadline, "the router did not apply the change"
            threading.Event().wait(0.05)  # polling a probe, bounded

    def run(self, docs: list[tuple[str, str]], **options: Any) -> dict[str, Envelope]:
        """Submit (request id, language) documents at once; their results by id."""
        subs = [Submission({"image": [IMAGES[lang]]}, request_id=rid) for rid, lang in docs]
        results = self.gateway.submit_many("docs", subs, **options)
        out = {}
        for sub, result in zip(subs, results, strict=True):
            assert isinstance(result, Envelope), f"{sub.request_id}: {result}"
            out[str(sub.request_id)] = result
        return out

    def read(self, topic: str, done: Any, partitions: int = PARTITIONS) -> list[Message]:
        collector = Collector(self.stack.bootstrap, topic, partitions)
        try:
            return collector.until(done, 120)
        finally:
            collector.close()


@pytest.fixture(scope="module")
def docs(
    broker: str, reference_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Docs]:
    prefix = f"e2e{int(time.time() * 1000) % 10**8}"
    # version 2 first, then 1: every version has a worker from the start (a previous version is
    # in use), so the tests' changes never start processes of their own
    for stage, versions in (
        ("ocr", "21"),
        ("langid", "21"),
        ("translate", "1"),
        ("sentiment", "21"),
    ):
        for version in versions:
            write_change(
                broker, "docs", Rollout(stage=stage, version=version), signer=admin(), prefix=prefix
            )
    stack = Stack(
        pipelines=(ROOT / "pipelines" / "docs.yaml",), repository=reference_repo,
        bootstrap=broker, topic_prefix=prefix, partitions=PARTITIONS,
        router_port=0, log_level="WARNING", keys_dir=keys_dir(),
    )  # fmt: skip
    with stack, BlockingGateway(broker, topic_prefix=prefix, default_timeout_s=120) as gateway:
        yield Docs(stack, gateway, prefix)
    assert stack.failure is None


def _router_seq(url: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^modelyard_router_control_seq\{pipeline="docs"\} (\S+)$', text, re.M)
    return float(found[1]) if found else -1.0


def _shadow_hop(docs: Docs, request_id: str) -> HopRecord:
    deadline = time.monotonic() + 60
    while True:
        records = read_request_records(
            docs.stack.bootstrap, audit_topic(docs.prefix), request_id
        ).records
        found = [r for r in records if isinstance(r, HopRecord) and r.shadow]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no shadow hop record for {request_id}"


def _text(result: Envelope, name: str) -> str:
    return result.fields[name].reshape(-1)[0].decode()


def test_branches_english_skips_translation_and_german_is_unsupported(docs: Docs) -> None:
    results = docs.run([("br-en", "en"), ("br-es", "es"), ("br-de", "de")])
    en, es, de = results["br-en"], results["br-es"], results["br-de"]
    assert all(r.error is None for r in results.values())
    assert _text(en, "language") == "en"
    assert "translation_status" not in en.fields
    assert set(en.served_by) == {"ocr", "langid", "sentiment"}  # translate never ran
    assert _text(en, "sentiment") == "negative"  # "This restaurant is horrible..."
    assert _text(es, "translation_status") == "translated"
    assert "room" in _text(es, "translation").lower()
    assert set(es.served_by) == {"ocr", "langid", "translate", "sentiment"}
    assert _text(de, "language") == "de"
    assert _text(de, "translation_status") == "unsupported"
    assert "sentiment" not in de.fields
    assert "sentiment" not in de.served_by


def test_shadow_results_are_captured_for_every_sampled_request_and_never_served(
    docs: Docs,
) -> None:
    docs.change(ShadowChange(stage="langid", version="2", sample_rate=0.5))
    docs.stack.wait_worker("langid:2", timeout_s=120)
    ids = [f"sh-{i}" for i in range(24)]
    shadowing = StageRouting(active="1", shadow=Shadow(version="2", sample_rate=0.5))
    sampled = {r for r in ids if should_shadow(shadowing, r, scope="docs/langid")}
    assert 0 < len(sampled) < len(ids)
    results = docs.run([(rid, "es" if i % 2 else "en") for i, rid in enumerate(ids)])
    assert {r.served_by["langid"] for r in results.values()} == {"langid:1"}

    def shadow_ids(ms: list[Message]) -> set[str]:
        return {m.key().decode() for m in ms if dict(m.headers() or []).get("shadow") == b"1"}

    topic = pipeline_shadow_topic(docs.prefix, "docs")
    messages = docs.read(topic, lambda ms: sampled <= shadow_ids(ms))
    mine = [m for m in messages if m.key().decode() in ids]
    assert shadow_ids(mine) == sampled  # every sampled request, and only those
    replies = [
        decode_envelope(m.value()) for m in mine if dict(m.headers() or []).get("shadow") == b"1"
    ]
    assert {(r.model, r.version) for r in replies} == {("langid", "2")}
    rid = sorted(sampled)[0]  # the shadow auditor audits and compares it
    hop = _shadow_hop(docs, rid)
    assert (hop.stage, hop.model, hop.version, hop.outcome) == ("langid", "langid", "2", "ok")
    assert hop.agrees is not None
    docs.change(ShadowChange(stage="langid", version=None))


def test_per_stage_rollback_under_traffic(docs: Docs) -> None:
    docs.change(Rollout(stage="sentiment", version="2"))
    docs.stack.wait_worker("sentiment:2", timeout_s=120)
    first = docs.run([(f"rb1-{i}", "en") for i in range(4)])
    assert {r.served_by["sentiment"] for r in first.values()} == {"sentiment:2"}
    during: dict[str, Envelope] = {}
    traffic = threading.Thread(
        target=lambda: during.update(docs.run([(f"rb2-{i}", "en") for i in range(12)]))
    )
    traffic.start()  # twelve documents queue up behind OCR while the rollback is written
    docs.change(Rollback(stage="sentiment"))
    traffic.join(180)
    after = docs.run([(f"rb3-{i}", "en") for i in range(4)])
    assert len(during) == 12
    assert all(r.error is None for r in [*during.values(), *after.values()])  # none lost or failed
    assert {r.served_by["sentiment"] for r in after.values()} == {"sentiment:1"}
    others = {
        (s, v)
        for r in [*first.values(), *during.values(), *after.values()]
        for s, v in r.served_by.items()
        if s != "sentiment"
    }
    assert others == {("ocr", "ocr:1"), ("langid", "langid:1")}  # other stages untouched


def test_canary_split_within_tolerance(docs: Docs) -> None:
    docs.change(CanaryChange(stage="ocr", version="2", weight=0.5))
    docs.stack.wait_worker("ocr:2", timeout_s=120)
    results = docs.run([(f"cn-{i}", "en") for i in range(60)])
    share = sum(r.served_by["ocr"] == "ocr:2" for r in results.values()) / len(results)
    assert share == pytest.approx(0.5, abs=0.2)  # 3 standard deviations of 60 fair draws
    assert all(_text(r, "language") == "en" for r in results.values())  # both versions read it
    docs.change(CanaryChange(stage="ocr", version=None))


def test_a_duplicate_reply_produces_one_result(docs: Docs) -> None:
    docs.run([("dup-e2e", "en")])
    inbox = pipeline_inbox_topic(docs.prefix, "docs")
    replies = [m for m in docs.read(inbox, lambda ms: sum(m.key() == b"dup-e2e" for m in ms) >= 3)
               if m.key() == b"dup-e2e"]  # fmt: skip
    produce_all(
        docs.stack.bootstrap,
        inbox,
        [(m.key().decode(), m.value(), m.headers() or []) for m in replies],
    )
    docs.run([("dup-after", "en")])  # routed after the replayed replies were consumed
    results = docs.read(
        pipeline_results_topic(docs.prefix, "docs"),
        lambda ms: {b"dup-e2e", b"dup-after"} <= {m.key() for m in ms},
    )
    assert sum(m.key() == b"dup-e2e" for m in results) == 1


def test_a_request_past_its_deadline_gets_an_error_result(docs: Docs) -> None:
    deadline = int((time.time() + 0.02) * 1000)  # OCR alone takes longer
    [result] = docs.run([("late-e2e", "es")], deadline_ms=deadline).values()
    assert result.error is not None
    assert result.error.code == "deadline"
