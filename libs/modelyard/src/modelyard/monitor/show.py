"""`modelyard monitor show`: read ``<prefix>.monitor`` once, merge, print a table.

The topic is read from its first offset to its end (assign() only, no group, nothing committed);
partial summaries are combined (latest revision per source, sources merged) and the last N
windows of every (stage, model, version, role) of the pipeline printed, with sparklines of p99
and error rate over them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from modelyard.monitor.hops import WindowKey
from modelyard.monitor.summary import WindowSummary, combine

__all__ = [
    "assessments_of",
    "read_assessments",
    "read_records",
    "read_summaries",
    "render",
    "sparkline",
    "summaries_of",
]

_BARS = "▁▂▃▄▅▆▇█"


def read_summaries(
    bootstrap: str, topic: str, kafka: Mapping[str, Any] | None = None, timeout_s: float = 10.0
) -> Iterator[WindowSummary]:
    """Every window summary on ``topic`` (values that are none are skipped)."""
    return summaries_of(read_records(bootstrap, topic, kafka, timeout_s))


def summaries_of(records: Iterable[dict[str, Any]]) -> Iterator[WindowSummary]:
    """The window summaries among ``records``."""
    for record in records:
        try:
            yield WindowSummary.from_json(record)
        except (ValueError, KeyError, TypeError):
            continue


def read_assessments(
    bootstrap: str, topic: str, kafka: Mapping[str, Any] | None = None, timeout_s: float = 10.0
) -> dict[tuple[WindowKey, str], dict[str, Any]]:
    """The latest assessment record per (key, window start) on ``topic``."""
    return assessments_of(read_records(bootstrap, topic, kafka, timeout_s))


def assessments_of(
    records: Iterable[dict[str, Any]],
) -> dict[tuple[WindowKey, str], dict[str, Any]]:
    """The latest assessment among ``records`` per (key, window start)."""
    latest: dict[tuple[WindowKey, str], dict[str, Any]] = {}
    for record in records:
        if record.get("kind") == "assessment":
            try:
                key = WindowKey(*(str(record[f]) for f in WindowKey._fields))
                latest[(key, str(record["start"]))] = record
            except KeyError:
                continue
    return latest


def read_records(
    bootstrap: str, topic: str, kafka: Mapping[str, Any] | None = None, timeout_s: float = 10.0
) -> Iterator[dict[str, Any]]:
    """Every JSON object on ``topic``, from its first offset to its end."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"modelyard-monitor-show-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 20,
        "log.connection.close": False, **(kafka or {}),
    })  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        yield from _drain(consumer, len(meta.partitions), timeout_s)
    finally:
        consumer.close()


def _drain(consumer: Consumer, partitions: int, timeout_s: float) -> Iterator[dict[str, Any]]:
    ended: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(ended) < partitions and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                ended.add(msg.partition())
            continue
        try:
            record = json.loads(msg.value())
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def sparkline(values: Sequence[float | None]) -> str:
    """One bar per value, scaled from 0 to the largest (a space for none)."""
    top = max((v for v in values if v is not None), default=0.0)
    if top <= 0:
        return "".join(" " if v is None else _BARS[0] for v in values)
    return "".join(
        " " if v is None else _BARS[min(len(_BARS) - 1, int(v / top * (len(_BARS) - 1) + 0.5))]
        for v in values
    )


def render(
    summaries: Iterator[WindowSummary] | list[WindowSummary],
    pipeline: str,
    last: int,
    assessments: Mapping[tuple[WindowKey, str], Mapping[str, Any]] | None = None,
) -> str:
    """The table: one row per (stage, model, version, role), its latest window's figures, its
    assessment (largest drift PSI, ``!`` when drifted; label accuracy) and sparklines of p99
    and error rate over its last ``last`` windows."""
    by_key: dict[WindowKey, list[WindowSummary]] = {}
    for window in combine(s for s in summaries if s.key.pipeline == pipeline):
        by_key.setdefault(window.key, []).append(window)
    head = ("stage", "version", "role", "window end", "req", "err%", "p50", "p95", "p99",
            "agree", "drift", "acc", "p99 trend", "err trend")  # fmt: skip
    rows: list[tuple[str, ...]] = [head]
    for key in sorted(by_key):
        rows.append(_row(key, by_key[key][-last:], assessments or {}))
    if len(rows) == 1:
        return f"no windows for pipeline {pipeline!r} yet"
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)  # fmt: skip


def _row(
    key: WindowKey,
    windows: list[WindowSummary],
    assessments: Mapping[tuple[WindowKey, str], Mapping[str, Any]],
) -> tuple[str, ...]:
    figs = [w.to_json() for w in windows]
    now = figs[-1]
    judged = assessments.get((key, now["start"]), {})
    lat = now["latency_ms"]
    agreement = now["agreement"]
    return (
        key.stage, f"{key.model}:{key.version}", key.role,
        datetime.fromtimestamp(windows[-1].end, UTC).strftime("%H:%M:%S"),
        str(now["requests"]), f"{100 * now['error_rate']:.1f}",
        *(_ms(lat[q]) for q in ("p50", "p95", "p99")),
        "-" if agreement is None else f"{100 * agreement:.1f}%",
        _drift(judged), _share(judged.get("accuracy")),
        sparkline([f["latency_ms"]["p99"] for f in figs]),
        sparkline([f["error_rate"] for f in figs]),
    )  # fmt: skip


def _drift(judged: Mapping[str, Any]) -> str:
    psis = [d["psi"] for d in judged.get("drift", ())]
    if not psis:
        return "-"
    return f"{max(psis):.2f}" + ("!" if judged.get("drifted") else "")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
