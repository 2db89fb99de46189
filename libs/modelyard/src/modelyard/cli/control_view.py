"""Plain-text views of the control plane for the CLI: status tables and history (pure).

A record routers rejected (``control/verify.py``) is shown as such: ``REJECTED`` before its
change, its claimed actor marked with ``?`` (nothing vouches for it), the rejection as its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from modelyard.control import ControlRecord, PipelineRouting, StageRouting
from modelyard.control.chain import Positioned
from modelyard.control.describe import describe_change, percent

__all__ = ["history_table", "last_changes", "status_text", "when"]

_NONE = "-"


def when(at: datetime) -> str:
    """``2026-12-02 14:00:01Z``: UTC, to the second."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def last_changes(records: Iterable[ControlRecord]) -> dict[str, ControlRecord]:
    """Per stage, the last record that changed its routing (records of one pipeline, in order)."""
    last: dict[str, ControlRecord] = {}
    before = None
    for record in records:
        for stage, routing in record.state.stages.items():
            if before is None or before.stage(stage) != routing:
                last[stage] = record
        before = record.state
    return last


def status_text(
    routing: PipelineRouting,
    records: Sequence[ControlRecord],
    stage_order: Sequence[str] = (),
    rejected: Sequence[Positioned] = (),
) -> str:
    """The status of one pipeline: a header line, one row per stage, guard rules, releases,
    and the records routers rejected (how many, and the last)."""
    head = f"pipeline {routing.pipeline} (seq {routing.seq})"
    if records:
        head += f" · last change: {_summary(records[-1])}"
    stages = [*stage_order, *(s for s in routing.stages if s not in stage_order)]
    if not stages:
        return "\n".join([f"{head}\n  no stages routed yet", *_rejected_lines(rejected)])
    last = last_changes(records)
    rows = [["STAGE", "ACTIVE", "PREVIOUS", "CANARY", "SHADOW", "LAST CHANGE"]]
    rows += [_stage_row(s, routing.stage(s), last.get(s)) for s in stages]
    lines = [head, *_table(rows)]
    lines += [_guard_line(s, routing.stage(s)) for s in stages if routing.stage(s).guards]
    for release in routing.releases.values():
        pinned = ", ".join(f"{s}={v}" for s, v in release.stages.items())
        lines.append(f"release {release.name}: {pinned}")
    return "\n".join([*lines, *_rejected_lines(rejected)])


def history_table(records: Sequence[Positioned]) -> str:
    """Every record: seq, when, who, what, why; a rejected one says so and why."""
    rows = [["SEQ", "AT", "ACTOR", "CHANGE", "REASON"]]
    for p in records:
        if p.compacted:
            rows.append(_compacted_row(p))
        rows.append(_history_row(p))
    return "\n".join(_table(rows))


def _history_row(got: Positioned) -> list[str]:
    r = got.record
    if got.rejected is None:
        return [str(r.seq), when(r.at), r.actor, describe_change(r.change), r.reason or _NONE]
    return [_NONE, when(r.at), f"{r.actor}?", f"REJECTED {describe_change(r.change)}",
            _rejection(got)]  # fmt: skip


def _compacted_row(got: Positioned) -> list[str]:
    """The changes compaction removed under ``got``: not readable any more, but their result is
    in its state."""
    seqs = got.compacted_seqs
    span = str(seqs[0]) if len(seqs) == 1 else f"{seqs[0]}-{seqs[-1]}"
    what = f"compacted away ({len(seqs)} change{'s' if len(seqs) > 1 else ''})"
    return [span, _NONE, _NONE, what, f"their result is in seq {got.record.seq}"]


def _rejection(got: Positioned) -> str:
    return f"{got.rejected}: {got.detail.splitlines()[0] if got.detail else ''}".rstrip(": ")


def _rejected_lines(rejected: Sequence[Positioned]) -> list[str]:
    if not rejected:
        return []
    last = rejected[-1]
    what = describe_change(last.record.change)
    return [
        f"rejected: {len(rejected)} record(s) ignored by routers; last at offset {last.offset}: "
        f"{what} claimed by {last.record.actor} ({_rejection(last)})"
    ]


def _summary(record: ControlRecord) -> str:
    text = f"{describe_change(record.change)} by {record.actor} at {when(record.at)}"
    return f"{text} ({record.reason})" if record.reason else text


def _stage_row(name: str, stage: StageRouting, last: ControlRecord | None) -> list[str]:
    canary = f"{stage.canary.version} @ {percent(stage.canary.weight)}" if stage.canary else None
    shadow = stage.shadow and f"{stage.shadow.version} @ {percent(stage.shadow.sample_rate)}"
    previous = ",".join(reversed(stage.previous))  # newest first: the rollback target leads
    change = f"{last.actor} {when(last.at)} {describe_change(last.change)}" if last else None
    return [name, stage.active or _NONE, previous or _NONE, canary or _NONE, shadow or _NONE,
            change or _NONE]  # fmt: skip


def _guard_line(name: str, stage: StageRouting) -> str:
    """``guard sentiment: error_rate > 0.1, p99_latency_ms > 500 (each over 60 s, >= 50)``."""
    rules = ", ".join(
        f"{r.metric} {r.bound} (over {r.window_s:g} s, >= {r.min_requests})" for r in stage.guards
    )
    return f"guard {name}: {rules}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
