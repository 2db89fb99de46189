"""Saved baselines: what a stage's active version's monitored values looked like when an operator
said "this is normal" (``modelyard monitor baseline save``); the active version's windows are
judged against it.

One record per (pipeline, stage) on ``<prefix>.monitor.baselines`` (one partition, compacted,
key ``pipeline/stage``): JSON, signed by an operator key allowed the pipeline (``signed.py``).
The monitor reads the topic from its start and follows it; a record it cannot verify is logged
and passed over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import KafkaError

from modelyard.control.reader import control_consumer, open_partition
from modelyard.errors import DecodeError, PermissionDeniedError, UnauthenticatedError
from modelyard.keys import Keyring, SigningKey
from modelyard.monitor.signed import sign_document, verified_document
from modelyard.monitor.summary import WindowSummary, iso, parse_iso
from modelyard.monitor.windows import Distribution, WindowStats, distribution_from_json

__all__ = ["Baseline", "BaselineFollower", "baseline_topic", "build_baselines", "encode_baseline"]

log = structlog.get_logger(__name__)


def baseline_topic(prefix: str) -> str:
    return f"{prefix}.monitor.baselines"


@dataclass(frozen=True, slots=True)
class Baseline:
    """One stage's reference distributions, from its active version's windows."""

    pipeline: str
    stage: str
    model: str
    version: str
    start: float
    end: float
    requests: int
    fields: Mapping[str, Distribution]
    saved_by: str = ""

    def document(self) -> dict[str, Any]:
        stats = WindowStats(requests=self.requests, fields=dict(self.fields))
        return {
            "schema": 1, "kind": "baseline", "pipeline": self.pipeline, "stage": self.stage,
            "model": self.model, "version": self.version, "start": iso(self.start),
            "end": iso(self.end), "requests": self.requests,
            "fields": stats.to_json()["fields"],
        }  # fmt: skip

    @classmethod
    def from_document(cls, data: Mapping[str, Any], saved_by: str) -> Baseline:
        return cls(
            pipeline=str(data["pipeline"]), stage=str(data["stage"]), model=str(data["model"]),
            version=str(data["version"]), start=parse_iso(data["start"]),
            end=parse_iso(data["end"]), requests=int(data["requests"]),
            fields={str(n): distribution_from_json(d) for n, d in data["fields"].items()},
            saved_by=saved_by,
        )  # fmt: skip


def build_baselines(windows: Iterable[WindowSummary], pipeline: str, last: int) -> list[Baseline]:
    """Per stage of ``pipeline``: its active version's ``last`` latest combined windows with
    monitored values, merged (the version of the latest window; windows of others are left
    out)."""
    by_stage: dict[str, list[WindowSummary]] = {}
    for w in windows:
        if w.key.pipeline == pipeline and w.key.role == "active" and w.stats.fields:
            by_stage.setdefault(w.key.stage, []).append(w)
    baselines = []
    for stage, group in sorted(by_stage.items()):
        newest = max(group, key=lambda w: w.start)
        same = sorted((w for w in group if w.key == newest.key), key=lambda w: w.start)[-last:]
        merged = WindowStats()
        for w in same:
            merged.merge(w.stats)
        baselines.append(Baseline(
            pipeline, stage, newest.key.model, newest.key.version, same[0].start,
            same[-1].end, merged.requests, merged.fields,
        ))  # fmt: skip
    return baselines


def encode_baseline(baseline: Baseline, key: SigningKey) -> tuple[bytes, bytes]:
    """(record key, signed value)."""
    return f"{baseline.pipeline}/{baseline.stage}".encode(), sign_document(baseline.document(), key)


def decode_baseline(value: bytes, keyring: Keyring | None) -> Baseline:
    """A verified baseline; DecodeError, UnauthenticatedError or PermissionDeniedError."""
    document, signer = verified_document(value, keyring)
    try:
        pipeline = str(document["pipeline"])
        if keyring is not None:
            entry = keyring.get(str(document.get("key_id")))
            if entry is None or not entry.may_change(pipeline):
                raise PermissionDeniedError(f"key {signer!r} may not set baselines of {pipeline}")
        return Baseline.from_document(document, signer)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"not a baseline record: {exc!r}") from None


class BaselineFollower:
    """Reads the baselines topic from its start, on a thread, forever; ``baselines`` is the
    latest verified one per (pipeline, stage)."""

    def __init__(
        self, bootstrap: str, prefix: str, keyring: Keyring | None,
        kafka: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self._bootstrap, self._topic, self._keyring = bootstrap, baseline_topic(prefix), keyring
        self._kafka = dict(kafka or {})
        self.baselines: dict[tuple[str, str], Baseline] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelyard-baselines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        consumer = control_consumer(self._bootstrap, self._kafka, wait_ms=500, quiet=True)
        try:
            while not self._stop.is_set() and open_partition(consumer, self._topic, 10) is None:
                time.sleep(1.0)  # no baseline saved yet: the topic comes with the first
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    if msg is not None and msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("baselines topic", error=msg.error().str())
                    continue
                self._take(msg.value() or b"")
        finally:
            consumer.close()

    def _take(self, value: bytes) -> None:
        try:
            baseline = decode_baseline(value, self._keyring)
        except (DecodeError, UnauthenticatedError, PermissionDeniedError) as exc:
            log.warning("baseline record refused", reason=str(exc))
            return
        self.baselines = {**self.baselines, (baseline.pipeline, baseline.stage): baseline}
        log.info("baseline", pipeline=baseline.pipeline, stage=baseline.stage,
                 version=f"{baseline.model}:{baseline.version}", by=baseline.saved_by)  # fmt: skip
